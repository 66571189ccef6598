"""The model store: versioned model artifacts, saved atomically, size-limited and checksummed.

Layout under `models.path`:

    <name>/manifest.json     versions of the model, oldest first (replaced atomically)
    <name>/<version>.<fmt>   one immutable artifact per version (`.onnx` or `.bin`)
    <name>/.lock             `flock`ed while the manifest changes
    <name>/.upload.*.tmp     an artifact being written (hidden; swept once its writer died)

Versions are strings. The default version is the next integer ("1", "2", ...), never reused
after a delete; an explicit version may be any valid name and must not exist yet. `latest` is
the version saved last. An artifact is ONNX when the model name ends with `.onnx` or `save_model`
is told `format="onnx"`; `load_model` then returns an `onnxruntime.InferenceSession` when the
optional `native` extra is installed, and None otherwise.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeAlias, TypedDict

from sinks.atomic import CHUNK_BYTES, atomic_write, fsync_dir, open_temp, publish, sync_file

if TYPE_CHECKING:
    from streams.config import JsonEngineConfig

FORMATS = ("bin", "onnx")
MANIFEST = "manifest.json"
LOCK = ".lock"
UPLOAD_STEM = "upload"
STALE_UPLOAD_SECONDS = 60.0
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")


ConfigSource: TypeAlias = "JsonEngineConfig | str | os.PathLike[str] | None"


class ModelStoreError(Exception):
    """A model operation that cannot be done; the message says which model and why."""


class ModelInfo(TypedDict):
    name: str
    version: str
    path: str
    size: int
    sha256: str
    saved_at: int  # epoch milliseconds
    format: str


def check_name(value: str, what: str = "model name") -> str:
    """Refuse anything that could leave the models directory or hide as a dot file."""
    if not isinstance(value, str) or not value:
        raise ModelStoreError(f"{what} must be a non-empty string, got {value!r}")
    if "\0" in value:
        raise ModelStoreError(f"{what} {value!r} contains a NUL byte")
    if "/" in value or "\\" in value or os.path.isabs(value):
        raise ModelStoreError(f"{what} {value!r} must not contain path separators")
    if value.startswith("."):
        raise ModelStoreError(f"{what} {value!r} must not start with '.' (no '..', no dot files)")
    if not _NAME.fullmatch(value):
        raise ModelStoreError(
            f"{what} {value!r}: use 1 to 200 of A-Z a-z 0-9 . _ -, not starting with . or -"
        )
    return value


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _chunks(data: bytes | bytearray | memoryview | BinaryIO) -> Iterator[bytes | memoryview]:
    """Bytes or a binary file object as 1 MiB pieces, so a large artifact is never held whole."""
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data).cast("B")
        for start in range(0, len(view), CHUNK_BYTES):
            yield view[start : start + CHUNK_BYTES]
        return
    if not hasattr(data, "read"):
        raise ModelStoreError(f"model data must be bytes or a binary file object, not {data!r}")
    while chunk := data.read(CHUNK_BYTES):
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise ModelStoreError("model data file must be opened in binary mode")
        yield chunk


def _sha256_file(path: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _native_backend() -> Any | None:
    """onnxruntime when the `native` extra is installed; its absence is not an error."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime


class ModelStore:
    """Models under `path`, each artifact at most `max_model_bytes`."""

    def __init__(self, path: str | os.PathLike[str], max_model_bytes: int) -> None:
        if max_model_bytes < 1:
            raise ValueError(f"max_model_bytes must be >= 1, got {max_model_bytes}")
        self.root = Path(path).absolute()
        self.max_model_bytes = max_model_bytes

    @classmethod
    def from_config(cls, config: ConfigSource = None) -> ModelStore:
        """A store from a loaded config, a config file path, or the default config lookup."""
        from streams.config import JsonEngineConfig, load_config

        cfg = config if isinstance(config, JsonEngineConfig) else load_config(config)
        return cls(cfg.models.path, cfg.models.max_model_bytes)

    # -- paths and manifest -------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        return self.root / check_name(name)

    def _read_manifest(self, name: str) -> dict[str, Any]:
        path = self._dir(name) / MANIFEST
        try:
            manifest = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {"name": name, "next_version": 1, "versions": []}
        except (OSError, ValueError) as exc:
            raise ModelStoreError(f"model {name!r}: unreadable manifest {path}: {exc}") from exc
        if not isinstance(manifest, dict) or not isinstance(manifest.get("versions"), list):
            raise ModelStoreError(f"model {name!r}: malformed manifest {path}")
        return manifest

    def _write_manifest(self, name: str, manifest: dict[str, Any]) -> None:
        data = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
        atomic_write(self._dir(name) / MANIFEST, data)

    def _info(self, name: str, entry: dict[str, Any]) -> ModelInfo:
        return ModelInfo(
            name=name,
            version=entry["version"],
            path=str(self._dir(name) / entry["file"]),
            size=entry["size"],
            sha256=entry["sha256"],
            saved_at=entry["saved_at"],
            format=entry["format"],
        )

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """One manifest writer per model at a time, across processes."""
        fd = os.open(self._dir(name) / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _model_dir(self, name: str) -> Path:
        """Create the model's directory (durably: its entry in the root is fsynced too)."""
        directory = self._dir(name)
        if not directory.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
            directory.mkdir(exist_ok=True)
            fsync_dir(self.root)
        return directory

    # -- writing --------------------------------------------------------------------------

    def save(
        self,
        name: str,
        data: bytes | bytearray | memoryview | BinaryIO,
        *,
        version: str | int | None = None,
        format: str | None = None,
    ) -> ModelInfo:
        """Stream `data` to a new version of `name`; it becomes visible only once complete."""
        fmt = format or ("onnx" if check_name(name).lower().endswith(".onnx") else "bin")
        if fmt not in FORMATS:
            raise ModelStoreError(f"model {name!r}: unknown format {fmt!r}, use one of {FORMATS}")
        wanted = None if version is None else check_name(str(version), "model version")
        size = memoryview(data).nbytes if isinstance(data, bytes | bytearray | memoryview) else 0
        if size > self.max_model_bytes:
            raise self._too_large(name, size)
        if wanted is not None and self._has_version(name, wanted):
            raise ModelStoreError(f"model {name!r} version {wanted!r} already exists")
        directory = self._model_dir(name)
        _sweep_dead_uploads(directory)
        with open_temp(directory, UPLOAD_STEM) as (f, temp):
            # Held until the file is closed: tells the sweeper this upload is alive.
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            size, sha256 = self._stream(name, data, f)
            sync_file(f)  # the slow fsync happens before, not under, the manifest lock
            with self._locked(name):
                manifest = self._read_manifest(name)
                entry = self._new_entry(name, manifest, wanted, fmt, size, sha256)
                publish(f, temp, directory / entry["file"])
                manifest["versions"].append(entry)
                self._write_manifest(name, manifest)
        return self._info(name, entry)

    def _stream(self, name: str, data: Any, f: BinaryIO) -> tuple[int, str]:
        """Copy chunk by chunk, hashing, and stop at the first byte past the limit."""
        digest, size = hashlib.sha256(), 0
        for chunk in _chunks(data):
            size += len(chunk)
            if size > self.max_model_bytes:
                raise self._too_large(name, size, partial=True)
            digest.update(chunk)
            f.write(chunk)
        return size, digest.hexdigest()

    def _too_large(self, name: str, size: int, partial: bool = False) -> ModelStoreError:
        seen = f"at least {size}" if partial else str(size)
        return ModelStoreError(
            f"model {name!r} exceeds max_model_bytes={self.max_model_bytes} ({seen} bytes);"
            " nothing was saved"
        )

    def _has_version(self, name: str, version: str) -> bool:
        """A cheap early check, so a duplicate is refused before streaming (rechecked locked)."""
        return any(e["version"] == version for e in self._read_manifest(name)["versions"])

    def _new_entry(
        self,
        name: str,
        manifest: dict[str, Any],
        wanted: str | None,
        fmt: str,
        size: int,
        sha256: str,
    ) -> dict[str, Any]:
        """Pick the version (under the lock) and describe the artifact about to be published."""
        taken = {e["version"] for e in manifest["versions"]}
        version = wanted
        if version is None:
            number = int(manifest.get("next_version", 1))
            while str(number) in taken:
                number += 1
            version = str(number)
        elif version in taken:
            raise ModelStoreError(f"model {name!r} version {version!r} already exists")
        if version.isdigit():
            manifest["next_version"] = max(int(manifest.get("next_version", 1)), int(version) + 1)
        return {
            "version": version,
            "file": f"{version}.{fmt}",
            "format": fmt,
            "size": size,
            "sha256": sha256,
            "saved_at": _now_ms(),
        }

    def delete(self, name: str, version: str | int) -> ModelInfo:
        """Drop a version from the manifest first, then its file: never a listed missing file."""
        version = check_name(str(version), "model version")
        if not (self._dir(name) / MANIFEST).is_file():
            raise ModelStoreError(f"no model {name!r}")
        with self._locked(name):
            manifest = self._read_manifest(name)
            entry = self._entry(name, manifest, version)
            manifest["versions"].remove(entry)
            self._write_manifest(name, manifest)
            with contextlib.suppress(FileNotFoundError):
                (self._dir(name) / entry["file"]).unlink()
            fsync_dir(self._dir(name))
        return self._info(name, entry)

    # -- reading ----------------------------------------------------------------------------

    def _entry(self, name: str, manifest: dict[str, Any], version: str | None) -> dict[str, Any]:
        versions = manifest["versions"]
        if not versions:
            raise ModelStoreError(f"no model {name!r}")
        if version is None:
            return versions[-1]
        for entry in versions:
            if entry["version"] == version:
                return entry
        known = ", ".join(e["version"] for e in versions)
        raise ModelStoreError(f"model {name!r} has no version {version!r} (has: {known})")

    def info(self, name: str, version: str | int | None = None) -> ModelInfo:
        """The record of one version (default: the latest)."""
        wanted = None if version is None else check_name(str(version), "model version")
        return self._info(name, self._entry(name, self._read_manifest(name), wanted))

    def latest(self, name: str) -> ModelInfo | None:
        """The version saved last, or None when the model has none."""
        versions = self._read_manifest(name)["versions"]
        return self._info(name, versions[-1]) if versions else None

    def list_models(self, name: str | None = None) -> list[ModelInfo]:
        """Every version of every model (or of `name`), by name, then oldest first."""
        if name is not None:
            return [self._info(name, e) for e in self._read_manifest(name)["versions"]]
        if not self.root.is_dir():
            return []
        names = sorted(
            p.name for p in self.root.iterdir() if _NAME.fullmatch(p.name) and p.is_dir()
        )
        return [info for n in names for info in self.list_models(n)]

    def verify(self, name: str, version: str | int | None = None) -> ModelInfo:
        """Re-hash the artifact; a changed, truncated or missing file raises."""
        info = self.info(name, version)
        path = Path(info["path"])
        try:
            size, sha256 = _sha256_file(path)
        except FileNotFoundError:
            raise ModelStoreError(
                f"model {name!r} version {info['version']!r}: {path} is missing"
            ) from None
        if (size, sha256) != (info["size"], info["sha256"]):
            raise ModelStoreError(
                f"model {name!r} version {info['version']!r} is corrupted: {path} has "
                f"{size} bytes sha256 {sha256}, the manifest says {info['size']} bytes "
                f"sha256 {info['sha256']}"
            )
        return info

    def load(self, name: str, version: str | int | None = None) -> Any | None:
        """Verify, then load with the native backend; None when no backend handles the format."""
        info = self.verify(name, version)
        backend = _native_backend() if info["format"] == "onnx" else None
        if backend is None:
            return None
        try:
            return backend.InferenceSession(info["path"], providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelStoreError(
                f"model {name!r} version {info['version']!r}: onnxruntime cannot load it: {exc}"
            ) from exc


def _sweep_dead_uploads(directory: Path) -> None:
    """Remove temp files whose writer died (SIGKILL, power loss): unlocked and not fresh."""
    cutoff = time.time() - STALE_UPLOAD_SECONDS
    for path in directory.glob(f".{UPLOAD_STEM}.*.tmp"):
        with contextlib.suppress(FileNotFoundError), path.open("rb") as f:
            if os.fstat(f.fileno()).st_mtime > cutoff:
                continue
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer holds it
            path.unlink()


# -- module functions over the configured store ---------------------------------------------


def save_model(
    name: str,
    data: bytes | bytearray | memoryview | BinaryIO,
    *,
    version: str | int | None = None,
    format: str | None = None,
    config: ConfigSource = None,
) -> ModelInfo:
    """Save `data` as a new version of `name` in the configured store; see `ModelStore.save`."""
    return ModelStore.from_config(config).save(name, data, version=version, format=format)


def load_model(
    name: str,
    version: str | int | None = None,
    *,
    config: ConfigSource = None,
) -> Any | None:
    """Verified native model (onnxruntime session), or None without the `native` extra."""
    return ModelStore.from_config(config).load(name, version)


def list_models(name: str | None = None, *, config: ConfigSource = None) -> list[ModelInfo]:
    return ModelStore.from_config(config).list_models(name)


def latest(name: str, *, config: ConfigSource = None) -> ModelInfo | None:
    return ModelStore.from_config(config).latest(name)


def delete_model(
    name: str,
    version: str | int,
    *,
    config: ConfigSource = None,
) -> ModelInfo:
    return ModelStore.from_config(config).delete(name, version)
