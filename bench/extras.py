"""The two narrower benchmarks of the project, run as part of the whole one.

`bench.validation` exposes `payloads()` and `measure()`, so it is called in-process;
`bench.publisher` only has a `main()` that sets up its own topics, so it runs as a child
process and its closing table is read back.
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

_CELLS = re.compile(r"\s{2,}")


def validation(events: int, repeat: int, seed: int = 1) -> tuple[str, list[dict[str, Any]]]:
    """Validation rates per core per event type: (Markdown table, rows)."""
    from bench import validation as vb

    rows = []
    for kind in vb.KINDS:
        raws = vb.payloads(kind, events, seed)
        rates = vb.measure(kind, raws, repeat)
        rows.append(
            {
                "type": kind,
                "bytes": sum(map(len, raws)) / len(raws),
                **rates,
                "x_jsonschema": rates["ours"] / rates["jsonschema"],
            }
        )
    lines = [
        f"{events:,} seeded events per type, parsing included, events/s of CPU time, best of "
        f"{repeat}.",
        "",
        "| type | bytes | orjson only | + fastjsonschema | Validator | jsonschema | x jsonschema |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['type']} | {r['bytes']:.0f} | {r['parse']:,.0f} | {r['fastjsonschema']:,.0f} | "
        f"{r['ours']:,.0f} | {r['jsonschema']:,.0f} | {r['x_jsonschema']:.1f} |"
        for r in rows
    ]
    return "\n".join(lines), rows


def publisher(bootstrap: str, events: int, repeat: int) -> tuple[str, list[dict[str, Any]]]:
    """`python -m bench.publisher` on the same broker: (Markdown table, rows)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.publisher",
            "--events",
            str(events),
            "--repeat",
            str(repeat),
            "--bootstrap",
            bootstrap,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench.publisher exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    header, rows, notes = _closing_table(proc.stdout)
    lines = [
        f"{events:,} seeded events per run, best of {repeat}, acknowledged by the broker "
        "(acks=all).",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    lines += ["| " + " | ".join(row.values()) + " |" for row in rows]
    lines += ["", *notes]
    return "\n".join(lines), rows


def _closing_table(text: str) -> tuple[list[str], list[dict[str, str]], list[str]]:
    """The last table of a bench's output: header (columns split on 2+ spaces), a dashed
    rule, rows of as many cells, then the notes."""
    lines = text.splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith("---") and i > 0]
    if not rules:
        raise RuntimeError(f"no table in the output:\n{text[-2000:]}")
    rule = rules[-1]
    header = _CELLS.split(lines[rule - 1].strip())
    rows, i = [], rule + 1
    while i < len(lines) and lines[i].strip():
        cells = _CELLS.split(lines[i].strip())
        if len(cells) != len(header):
            break  # the notes under the table
        rows.append(dict(zip(header, cells, strict=True)))
        i += 1
    if not rows:
        raise RuntimeError(f"an empty table in the output:\n{text[-2000:]}")
    return header, rows, [line for line in lines[i:] if line.strip()]
