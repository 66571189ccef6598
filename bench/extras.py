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

_ROW = re.compile(r"^(?P<name>\S.*?)\s{2,}(?P<rate>[\d,]+)\s+(?P<mb>[\d.]+)\s+(?P<x>[\d.]+)x$")


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
    rows = []
    for line in proc.stdout.splitlines():
        m = _ROW.match(line.strip())
        if m:
            rows.append(
                {
                    "variant": m["name"],
                    "events_per_s": float(m["rate"].replace(",", "")),
                    "mb_per_s": float(m["mb"]),
                    "x_raw": float(m["x"]),
                }
            )
    if not rows:
        raise RuntimeError(f"no table in bench.publisher's output:\n{proc.stdout[-2000:]}")
    footer = [line for line in proc.stdout.splitlines() if line.startswith("x raw")]
    lines = [
        f"{events:,} seeded events per run, best of {repeat}, acknowledged by the broker "
        "(acks=all).",
        "",
        "| variant | events/s | MB/s | x raw |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['variant']} | {r['events_per_s']:,.0f} | {r['mb_per_s']:.1f} | {r['x_raw']:.2f} |"
        for r in rows
    ]
    lines += ["", *footer]
    return "\n".join(lines), rows
