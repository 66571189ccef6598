"""Configuration: one YAML file, every key overridable by environment variables.

Precedence (highest first): `JSON_ENGINE__<SECTION>__<KEY>` variables (nested with `__`),
`KAFKA_BOOTSTRAP_SERVERS`, the YAML file (`--config` or `JSON_ENGINE_CONFIG`), defaults.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from sinks.formats.compression import LEVELS
from sinks.s3.location import S3Location
from sinks.s3.store import S3Options

CONFIG_ENV = "JSON_ENGINE_CONFIG"
CHANNELS = (
    "engine_execution",
    "comparison_result",
    "training_sample",
    "aggregated_stats",
    "dead_letter",
    "alerts",
)
EVENT_TYPES = ("engine_execution", "comparison_result", "training_sample")
EventType = Literal["engine_execution", "comparison_result", "training_sample"]


class ConfigError(Exception):
    """A configuration file or value that cannot be used; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SchemaRegistryConfig(_Strict):
    """`kafka.schema_registry`: values in Confluent's wire format (magic byte 0, a 4-byte
    schema id, the JSON) are accepted when their id is in `allowed_ids` or known to the
    registry at `url` (streams/readers/schema_ids.py); the Publisher writes that framing
    when `publish` is on (streams/framing.py)."""

    # http(s)://host:port (a comma-separated list is tried in turn); mock:// is an in-process
    # registry of confluent-kafka's, empty in a worker (for tests).
    url: str | None = Field(None, pattern=r"^(https?|mock)://\S+$")
    allowed_ids: list[int] = Field(default_factory=list)
    basic_auth_user_info: str | None = None  # "key:secret" (Confluent Cloud's API key)
    ssl_ca_location: Path | None = None
    timeout_seconds: float = Field(10.0, gt=0, le=600)
    # The Publisher frames each value with its type's schema id: `publish_ids` where given,
    # else the id of the bundled schema registered at `url` under `<topic>-value`.
    publish: bool = False
    publish_ids: dict[EventType, int] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _ids(self) -> SchemaRegistryConfig:
        for schema_id in [*self.allowed_ids, *self.publish_ids.values()]:
            if not 0 <= schema_id < 2**32:
                raise ValueError(f"schema id {schema_id} is not a 4-byte unsigned integer")
        return self

    def client_config(self) -> dict[str, Any]:
        """The settings of confluent-kafka's SchemaRegistryClient: one try per lookup (a
        registry that does not answer is retried by the worker, never waited on here)."""
        settings: dict[str, Any] = {
            "url": self.url,
            "timeout": self.timeout_seconds,
            "max.retries": 0,
        }
        if self.basic_auth_user_info:
            settings["basic.auth.user.info"] = self.basic_auth_user_info
        if self.ssl_ca_location is not None:
            settings["ssl.ca.location"] = str(self.ssl_ca_location)
        return settings


class KafkaConfig(_Strict):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = Field("json-engine.", pattern=r"^[A-Za-z0-9._-]*$", max_length=200)
    partitions: int = Field(6, ge=1, le=10_000)
    replication_factor: int = Field(1, ge=1, le=32)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    schema_registry: SchemaRegistryConfig = Field(default_factory=SchemaRegistryConfig)

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaConfig:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_mechanism, "
                "sasl_username and sasl_password"
            )
        return self

    def client_config(self) -> dict[str, Any]:
        """Connection settings for every librdkafka client (producers, consumers, admin)."""
        settings: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol.lower(),
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
        }
        settings.update({k: str(v) for k, v in optional.items() if v is not None})
        return settings

    @property
    def app_id(self) -> str:
        """Faust app id and consumer group; starts with the prefix so internal topics do too."""
        return f"{self.topic_prefix}worker"


def _base_path(value: Any) -> Path | S3Location:
    if isinstance(value, Path | S3Location):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError("must be a directory or s3://bucket/prefix")
    return S3Location.parse(value) if value.startswith("s3://") else Path(value)


# A directory, or `s3://bucket/prefix` (sinks/s3/): the same layout as objects.
BasePath = Annotated[Path | S3Location, PlainValidator(_base_path), PlainSerializer(str)]


class S3Config(_Strict):
    """`output.s3`: how to reach `s3://` output; unset keys come from the standard AWS sources
    (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_PROFILE, web identity…)."""

    endpoint_url: str | None = Field(None, pattern=r"^https?://[^\s/]+")
    region: str | None = Field(None, pattern=r"^[a-z0-9-]+$")
    profile: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    ca_bundle: Path | None = None  # PEM file of the CA that signed the endpoint's certificate
    verify_tls: bool = True
    connect_timeout_seconds: float = Field(5.0, gt=0, le=600)
    read_timeout_seconds: float = Field(60.0, gt=0, le=3600)
    max_attempts: int = Field(3, ge=1, le=20)  # per request, botocore's standard retry mode
    concurrency: int = Field(16, ge=1, le=256)  # uploads in flight at once, per worker
    spool_dir: Path | None = None  # in-progress bytes on local disk; default: the temp dir

    def options(self) -> S3Options:
        return S3Options(
            endpoint_url=self.endpoint_url,
            region=self.region,
            profile=self.profile,
            addressing_style=self.addressing_style,
            ca_bundle=str(self.ca_bundle) if self.ca_bundle else None,
            verify=self.verify_tls,
            connect_timeout=self.connect_timeout_seconds,
            read_timeout=self.read_timeout_seconds,
            max_attempts=self.max_attempts,
            concurrency=self.concurrency,
            spool_dir=str(self.spool_dir) if self.spool_dir else None,
        )


class CompactionConfig(_Strict):
    """`output.compaction`: `json-engine compact` (sinks/compaction/). A bucket of a partition
    is closed once its hour ended `grace_hours` before the newest bucket the partition has
    written; `delete_jsonl` removes the JSONL files a Parquet file replaced."""

    grace_hours: float = Field(2, ge=0)
    delete_jsonl: bool = False


class OutputConfig(_Strict):
    base_path: BasePath = Path("./output")
    s3: S3Config = Field(default_factory=S3Config)
    compaction: CompactionConfig = Field(default_factory=CompactionConfig)
    # A copy of a record with an id (comparisons, training samples, aggregated stats) is
    # dropped when its hour is within this much of its partition's stream time
    # (streams/readers/dedupe.py); past max_ids ids, the hours used longest ago are forgotten
    # and read again from the files when needed.
    dedupe_horizon_hours: float = Field(168, gt=0)
    dedupe_max_ids: int = Field(1_000_000, ge=1000)
    retention_days: float | None = Field(None, gt=0)  # delete older buckets; None: keep all
    retention_check_seconds: float = Field(600, gt=0)

    @model_validator(mode="after")
    def _s3_options(self) -> OutputConfig:
        """An `s3://` base path carries `output.s3` to every sink and reader made from it."""
        if isinstance(self.base_path, S3Location):
            object.__setattr__(self, "base_path", self.base_path.with_options(self.s3.options()))
        return self


class ChannelConfig(_Strict):
    enabled: bool = True
    filename: str = Field(..., pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*\.jsonl$")
    buffer_size: int = Field(10_000, ge=1, le=1_000_000)
    auto_flush_seconds: float = Field(1.0, gt=0, le=3600)
    validate_: bool = Field(True, alias="validate")
    roll_bytes: int = Field(64 * 1024 * 1024, ge=1)
    roll_seconds: float = Field(300.0, ge=0)
    # Finished files `.jsonl.gz` / `.jsonl.zst`: one member or frame per checkpoint's append
    # (sinks/formats/compression.py); the level is the codec's default (gzip 6, zstd 3) unless
    # given.
    compression: Literal["none", "gzip", "zstd"] = "none"
    compression_level: int | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _level(self) -> ChannelConfig:
        if self.compression_level is not None:
            levels = LEVELS.get(self.compression)
            if levels is None or self.compression_level not in levels:
                allowed = f"{levels.start}..{levels.stop - 1}" if levels else "none"
                raise ValueError(
                    f"compression_level {self.compression_level} does not fit compression "
                    f"{self.compression} (levels {allowed})"
                )
        return self

    @property
    def directory(self) -> str:
        """`events.jsonl` → finished part files under `<base_path>/events/`."""
        return self.filename.removesuffix(".jsonl")


def _channel(filename: str) -> Any:
    return Field(default_factory=lambda: ChannelConfig(filename=filename))


class ChannelsConfig(_Strict):
    engine_execution: ChannelConfig = _channel("events.jsonl")
    comparison_result: ChannelConfig = _channel("comparisons.jsonl")
    training_sample: ChannelConfig = _channel("training_samples.jsonl")
    aggregated_stats: ChannelConfig = _channel("aggregated_stats.jsonl")
    dead_letter: ChannelConfig = _channel("rejected.jsonl")
    alerts: ChannelConfig = _channel("alerts.jsonl")  # regression alerts (streams/alerts/)

    @model_validator(mode="before")
    @classmethod
    def _default_filenames(cls, data: Any) -> Any:
        """A partial channel entry (say only `buffer_size`) keeps its default filename."""
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                entry = data.get(name)
                if isinstance(entry, dict) and "filename" not in entry:
                    default = field.default_factory().filename  # type: ignore[misc]
                    data[name] = {**entry, "filename": default}
        return data

    @model_validator(mode="after")
    def _distinct_files(self) -> ChannelsConfig:
        names = [getattr(self, c).filename for c in CHANNELS]
        if len(set(names)) != len(names):
            raise ValueError(f"channel filenames must be distinct, got {names}")
        return self

    def get(self, channel: str) -> ChannelConfig:
        return getattr(self, channel)


class ValidationConfig(_Strict):
    on_invalid: Literal["dead_letter", "skip", "fail"] = "dead_letter"
    max_payload_bytes: int = Field(1024 * 1024, ge=64)
    max_dead_letter_payload_bytes: int = Field(64 * 1024, ge=64)


class AggregationConfig(_Strict):
    enabled: bool = True
    window_minutes: float = Field(1, gt=0, le=24 * 60)
    grace_seconds: float = Field(30, ge=0)
    idle_seconds: float = Field(60, gt=0)
    checkpoint_seconds: float = Field(1.0, gt=0, le=3600)
    # An event time this far ahead of its record's Kafka timestamp is dead-lettered (`future`)
    # before any reader sees it; null turns the check off.
    max_future_seconds: float | None = Field(3600, ge=0)
    # Open windows a partition's fold keeps (~600 bytes each, more past 32 events); past it
    # the oldest are handed to the merge early, which changes no value.
    max_windows_per_partition: int = Field(10_000, ge=1)
    # An engine without a window for this long in stream time is forgotten by the merge: its
    # live series go and its regression baseline starts anew (about 2 KB kept per engine).
    forget_engines_after_hours: float = Field(168, gt=0)


class Thresholds(_Strict):
    gold: float = Field(0.9, ge=0, le=1)
    silver: float = Field(0.75, ge=0, le=1)
    bronze: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if not self.gold >= self.silver >= self.bronze:
            raise ValueError(
                f"thresholds must satisfy gold >= silver >= bronze, got gold={self.gold} "
                f"silver={self.silver} bronze={self.bronze}"
            )
        return self


class TrainingConfig(_Strict):
    enabled: bool = True
    thresholds: Thresholds = Field(default_factory=Thresholds)


class OtlpConfig(_Strict):
    """OpenTelemetry GenAI spans from the Collector's kafka exporter (streams/otlp/)."""

    enabled: bool = False
    # The literal topic name, without the prefix: the Collector names it.
    topic: str = Field("otlp_spans", pattern=r"^[A-Za-z0-9._-]+$", max_length=249)
    encoding: Literal["otlp_proto", "otlp_json"] = "otlp_proto"


class Price(_Strict):
    """One engine's prices per million tokens from `valid_from` on (streams/pricing/)."""

    engine: str = Field(min_length=1, max_length=256)  # an exact engine_id, or a glob (fnmatch)
    valid_from: datetime  # a date or an ISO time; UTC unless it says otherwise
    input: float = Field(ge=0, allow_inf_nan=False)
    output: float = Field(ge=0, allow_inf_nan=False)
    # Absent: those tokens cost the input (cached) or output (reasoning) price.
    cached_input: float | None = Field(None, ge=0, allow_inf_nan=False)
    cache_write_input: float | None = Field(None, ge=0, allow_inf_nan=False)
    reasoning_output: float | None = Field(None, ge=0, allow_inf_nan=False)

    @property
    def valid_from_ms(self) -> int:
        when = self.valid_from
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return round(when.timestamp() * 1000)


class PricingConfig(_Strict):
    """A dated price table; `file` names a YAML or JSON file of the same keys instead."""

    currency: str = Field("USD", pattern=r"^[A-Za-z]{3}$")
    prices: list[Price] = Field(default_factory=list)
    file: Path | None = None

    @model_validator(mode="after")
    def _from_file(self) -> PricingConfig:
        if self.file is None:
            return self
        if self.prices:
            raise ValueError("give prices or file, not both")
        table = load_price_file(self.file)
        self.__dict__.update(currency=table.currency, prices=table.prices)
        return self


def load_price_file(path: Path) -> PricingConfig:
    """A price table file (YAML or JSON: `currency`, `prices`); ConfigError names the key."""
    data = _read_yaml(path)
    if "file" in data:
        raise ConfigError(f"pricing.file {path}: file: a price file cannot name another")
    try:
        return PricingConfig(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, f"pricing.file {path}")) from None


class ModelsConfig(_Strict):
    path: Path = Path("./models")
    max_model_bytes: int = Field(200_000_000, ge=1)


class MetricsConfig(_Strict):
    port: int = Field(0, ge=0, le=65535)  # 0: no HTTP endpoint
    # Distinct engines a worker exports `json_engine_engine_*` series for (the first by
    # engine_id); the others are counted in json_engine_engine_series_over_cap.
    max_engines: int = Field(1000, ge=0, le=1_000_000)


class RegressionConfig(_Strict):
    """Each emitted window tested against the engine's trailing baseline (streams/alerts/)."""

    enabled: bool = True
    baseline_windows: int = Field(30, ge=1, le=10_000)
    min_count: int = Field(30, ge=1)  # executions a window (and the baseline) needs to be tested
    # ... for the p95 test: the p95 of fewer latencies is too noisy (README, Regression alerts)
    p95_min_count: int = Field(100, ge=1)
    alpha: float = Field(0.001, gt=0, lt=0.5)  # false alarms per tested window, stationary data
    p95_factor: float = Field(2.0, gt=1)


class JsonEngineConfig(_Strict):
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    channels: ChannelsConfig = Field(default_factory=ChannelsConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    aggregation: AggregationConfig = Field(default_factory=AggregationConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    otlp: OtlpConfig = Field(default_factory=OtlpConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    pricing: PricingConfig | None = None  # no cost in the aggregates without it
    regression: RegressionConfig = Field(default_factory=RegressionConfig)


class _BootstrapEnvSource(PydanticBaseSettingsSource):
    """`KAFKA_BOOTSTRAP_SERVERS`, the variable every Kafka tool and container knows."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        value = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        return {"json_engine": {"kafka": {"bootstrap_servers": value}}} if value else {}


class Settings(BaseSettings):
    json_engine: JsonEngineConfig = Field(default_factory=JsonEngineConfig)

    model_config = SettingsConfigDict(
        env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's content arrives as init arguments, so it ranks below the environment.
        return (env_settings, _BootstrapEnvSource(settings_cls), init_settings)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping (json_engine: …)")
    return data


def _describe(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"] if p != "validate_") or "(top level)"
        key = key.replace("validate_", "validate")
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {key}: {msg}{shown}")
    return "\n".join(lines)


def load_config(path: str | Path | None = None) -> JsonEngineConfig:
    """Load `path`, else `$JSON_ENGINE_CONFIG`, else defaults; then apply the environment."""
    chosen = path or os.environ.get(CONFIG_ENV) or None
    data = _read_yaml(Path(chosen)) if chosen else {}
    source = f"file {chosen} and environment" if chosen else "defaults and environment"
    try:
        return Settings(**data).json_engine
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
