"""Jars of extra JVM contenders (Kafka Connect) resolved from Maven Central with `mvn`, once.

The same approach as `streams.local_kafka.provision`: a generated pom, `mvn -q
dependency:copy-dependencies` of the runtime scope into a temporary directory, renamed into
the cache when complete. The cache sits beside the broker's (`JSON_ENGINE_CACHE` or
~/.cache/json-engine), so `mvn`'s local repository serves what the broker already fetched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from streams import local_kafka

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.json-engine</groupId><artifactId>{name}</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{dependencies}
  </dependencies>
</project>
"""
_DEPENDENCY = (
    "    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
    "<version>{v}</version></dependency>"
)


def cache_root() -> Path:
    """Beside the broker's jars: `<cache>/bench/`."""
    return local_kafka.cache_dir().parent / "bench"


def resolve(name: str, artifacts: list[str]) -> Path:
    """Directory holding `artifacts` ("group:artifact:version") and their runtime dependencies."""
    libs = cache_root() / name / "libs"
    if (libs / ".complete").exists():
        return libs
    if shutil.which("mvn") is None:
        raise RuntimeError("`mvn` is not on PATH (Debian: apt-get install maven)")
    libs.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".resolve-", dir=libs.parent))
    try:
        deps = "\n".join(
            _DEPENDENCY.format(g=g, a=a, v=v) for g, a, v in (x.split(":") for x in artifacts)
        )
        pom = work / "pom.xml"
        pom.write_text(_POM.format(name=name, dependencies=deps))
        proc = subprocess.run(
            [
                "mvn",
                "-B",
                "-q",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={work / 'libs'}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip()[-2000:]
            raise RuntimeError(
                f"mvn could not resolve {artifacts} (exit {proc.returncode}):\n{tail}"
            )
        (work / "libs" / ".complete").write_text("\n".join(artifacts))
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(libs)
        os.replace(work / "libs", libs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return libs
