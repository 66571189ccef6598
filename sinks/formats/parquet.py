"""Parquet files of a channel: typed columns from the JSON Schema, and every line kept whole.

`json-engine compact` (sinks/compaction/) turns the finished JSONL files of one closed bucket
and partition into one Parquet file. Its columns:

- one per property of the channel's JSON Schema (schemas/v1/<kind>.json): objects with
  properties as structs, arrays as lists, `timestamp`, `created_at`, `window_start`,
  `window_end` and `received_at` (epoch ms) as `timestamp[ms, UTC]`; a value that does not
  fit its type (a channel written with validation off) is null there;
- `_extra`: the fields a producer added beyond the schema, as a JSON object (null when
  none); open nested objects (`metrics`) have their own `_extra` member; maps and
  objects without a fixed shape (`evaluations`) are JSON strings;
- `_line`: the line exactly as it was in the JSONL file (a bucket with a line that is not
  UTF-8, possible only with validation off, is not compacted), so the readers (sinks/reader.py,
  `cat`, the offline commands, the dedupe) return the same bytes from either format, and
  nothing a producer wrote can be lost by a type;
- `_partition` and `_file_first`: the Kafka partition and the first offset of the JSONL
  file each row came from, so a reader that listed a JSONL file that is removed before it
  opens it reads exactly that file's rows here.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from schemas import schema_file

TIME_NAMES = frozenset({"timestamp", "created_at", "window_start", "window_end", "received_at"})
TIME = pa.timestamp("ms", tz="UTC")
INT64 = (-(2**63), 2**63 - 1)
EXTRA = "_extra"
LINE = "_line"
FILE_FIRST = "_file_first"
ROW_GROUP_ROWS = 64 * 1024
SCALARS = {
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
    "string": pa.string(),
}


def load_schema(kind: str) -> dict[str, Any]:
    """The channel's bundled JSON Schema (the channel key is its record kind)."""
    return orjson.loads(schema_file(kind).read_bytes())


def _type_name(node: dict[str, Any]) -> str | None:
    kind = node.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if len(kinds) == 1 else None
    if kind is None and "enum" in node and all(isinstance(v, str) for v in node["enum"]):
        return "string"
    return kind


def arrow_type(node: dict[str, Any], name: str = "") -> pa.DataType:
    """The Arrow type of a JSON Schema node; JSON text (string) where no fixed type fits."""
    kind = _type_name(node)
    if kind == "integer" and name in TIME_NAMES:
        return TIME
    if kind in SCALARS:
        return SCALARS[kind]
    if kind == "array" and isinstance(node.get("items"), dict):
        return pa.list_(arrow_type(node["items"]))
    if kind == "object" and node.get("properties"):
        fields = [pa.field(k, arrow_type(v, k)) for k, v in node["properties"].items()]
        if node.get("additionalProperties", True) is not False:
            fields.append(pa.field(EXTRA, pa.string()))
        return pa.struct(fields)
    return pa.string()  # JSON text: maps, unions, untyped


def arrow_schema(json_schema: dict[str, Any]) -> pa.Schema:
    """The columns of a channel's Parquet files (see the module's docstring)."""
    record = arrow_type(json_schema)
    return pa.schema(
        [
            *record,
            pa.field(LINE, pa.string(), nullable=False),
            pa.field("_partition", pa.int32(), nullable=False),
            pa.field(FILE_FIRST, pa.int64(), nullable=False),
        ]
    )


Convert = Callable[[Any], Any]


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _boolean(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _integer(value: Any) -> int | None:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    ok = isinstance(value, int) and not isinstance(value, bool)
    return value if ok and INT64[0] <= value <= INT64[1] else None


def _number(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok and abs(value) < 1.8e308 else None


def converter(kind: pa.DataType | pa.Schema) -> Convert:
    """A function from a parsed JSON value to a value of `kind`, None when it does not fit;
    built once per type, so a row costs no type dispatch."""
    if isinstance(kind, pa.Schema) or pa.types.is_struct(kind):
        fields = [(f.name, converter(f.type)) for f in kind if f.name != EXTRA]
        names = {f.name for f in kind}
        extra = EXTRA in names

        def struct(value: Any) -> dict[str, Any] | None:
            if not isinstance(value, dict):
                return None
            row = {}
            for name, convert in fields:
                item = value.get(name)
                row[name] = None if item is None else convert(item)
            if extra:
                rest = {k: v for k, v in value.items() if k not in names}
                row[EXTRA] = orjson.dumps(rest).decode() if rest else None
            return row

        return struct
    if pa.types.is_list(kind):
        item = converter(kind.value_type)

        def array(value: Any) -> list[Any] | None:
            if not isinstance(value, list):
                return None
            return [None if v is None else item(v) for v in value]

        return array
    if pa.types.is_boolean(kind):
        return _boolean
    if pa.types.is_int64(kind) or pa.types.is_timestamp(kind):
        return _integer
    if pa.types.is_float64(kind):
        return _number
    return _string


def table_of(
    rows: list[tuple[bytes, int]], partition: int, json_schema: dict[str, Any]
) -> pa.Table:
    """The table of `rows` (line, first offset of its JSONL file) in file and line order."""
    schema = arrow_schema(json_schema)
    to_row = converter(arrow_type(json_schema))
    records = []
    for line, file_first in rows:
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            parsed = None
        row = to_row(parsed) or {}
        row[LINE] = line.decode("utf-8")  # not UTF-8: UnicodeDecodeError, the bucket stays JSONL
        row["_partition"] = partition
        row[FILE_FIRST] = file_first
        records.append(row)
    return pa.Table.from_pylist(records, schema=schema)


def parquet_bytes(table: pa.Table) -> bytes:
    """The whole Parquet file (zstd): the rows of each JSONL file in row groups of their own
    (at most 64k rows each), so a reader finds a file's rows from the footer alone."""
    out = io.BytesIO()
    firsts = table.column(FILE_FIRST).to_pylist()
    with pq.ParquetWriter(out, table.schema, compression="zstd") as writer:
        start = 0
        for end in range(1, len(firsts) + 1):
            if end == len(firsts) or firsts[end] != firsts[start] or end - start == ROW_GROUP_ROWS:
                writer.write_table(table.slice(start, end - start), row_group_size=ROW_GROUP_ROWS)
                start = end
    return out.getvalue()


def segments(parquet: pq.ParquetFile) -> dict[int, list[int]]:
    """First offset of each JSONL file a Parquet file holds → its row groups, from the
    footer (each row group holds one file's rows: `parquet_bytes`)."""
    leaves = parquet.schema  # Parquet's leaf columns: a struct's fields are columns too
    index = [leaves.column(i).path for i in range(len(leaves))].index(FILE_FIRST)
    found: dict[int, list[int]] = {}
    for group in range(parquet.num_row_groups):
        stats = parquet.metadata.row_group(group).column(index).statistics
        if stats is None or not stats.has_min_max or stats.min != stats.max:
            raise ValueError("a Parquet file not written by json-engine compact")
        found.setdefault(stats.min, []).append(group)
    return found


def parquet_lines(parquet: pq.ParquetFile, groups: list[int] | None = None) -> Iterator[bytes]:
    """The lines kept in a Parquet file (or in some of its row groups), in order."""
    for group in range(parquet.num_row_groups) if groups is None else groups:
        for line in parquet.read_row_group(group, columns=[LINE]).column(0).to_pylist():
            yield line.encode("utf-8")
