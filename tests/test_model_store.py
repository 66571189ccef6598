"""The model store per the Contract: atomic, streamed, size-limited, checksummed, crash-safe."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sinks import models
from sinks.models import ModelStore, ModelStoreError, check_name
from streams.cli.models import models_app

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("JSON_ENGINE"):
            monkeypatch.delenv(name)


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models", max_model_bytes=64 * MiB)


def visible(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if not p.name.startswith(".")}


class Endless(io.RawIOBase):
    """A binary stream that never ends: the limit must stop it, not end-of-file."""

    def __init__(self, total: int | None = None) -> None:
        self.left = total

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = MiB if n < 0 else n
        if self.left is not None:
            n = min(n, self.left)
            self.left -= n
        return b"\x42" * n


# -- saving, listing, versions ----------------------------------------------------------------


def test_save_records_size_sha256_and_next_integer_versions(store: ModelStore) -> None:
    first = store.save("ranker", b"v1 weights")
    second = store.save("ranker", io.BytesIO(b"v2 weights, longer"))
    assert (first["version"], second["version"]) == ("1", "2")
    assert first["size"] == len(b"v1 weights")
    assert first["sha256"] == hashlib.sha256(b"v1 weights").hexdigest()
    assert Path(second["path"]).read_bytes() == b"v2 weights, longer"
    assert abs(first["saved_at"] - time.time() * 1000) < 60_000
    assert store.latest("ranker") == second
    assert store.list_models() == [first, second]
    assert visible(store.root / "ranker") == {"manifest.json", "1.bin", "2.bin"}


def test_explicit_versions_are_immutable_and_numbers_are_not_reused(store: ModelStore) -> None:
    store.save("m", b"a", version="2024-06")
    store.save("m", b"b", version=7)
    with pytest.raises(ModelStoreError, match="version '7' already exists"):
        store.save("m", b"c", version="7")
    assert store.save("m", b"d")["version"] == "8"
    store.delete("m", "8")
    assert store.save("m", b"e")["version"] == "9"
    assert [i["version"] for i in store.list_models("m")] == ["2024-06", "7", "9"]


def test_delete_removes_the_version_and_its_file(store: ModelStore) -> None:
    one = store.save("m", b"a")
    two = store.save("m", b"b")
    assert store.delete("m", 2) == two
    assert store.latest("m") == one
    assert not Path(two["path"]).exists()
    with pytest.raises(ModelStoreError, match="no version '2'"):
        store.delete("m", "2")
    with pytest.raises(ModelStoreError, match="no model 'other'"):
        store.delete("other", "1")
    store.delete("m", "1")
    assert store.latest("m") is None
    assert store.list_models() == []


def test_module_functions_use_the_configured_store(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        f"json_engine:\n  models: {{path: '{tmp_path / 'm'}', max_model_bytes: 4}}\n"
    )
    info = models.save_model("x", b"1234", config=cfg_file)
    assert info["path"] == str(tmp_path / "m" / "x" / "1.bin")
    with pytest.raises(ModelStoreError, match="max_model_bytes=4"):
        models.save_model("x", b"12345", config=cfg_file)
    assert models.list_models(config=cfg_file) == [info]
    assert models.latest("x", config=cfg_file) == info
    assert models.load_model("x", config=cfg_file) is None  # not a native format
    assert models.delete_model("x", "1", config=cfg_file) == info


# -- size limit -----------------------------------------------------------------------------


@pytest.mark.parametrize("as_file", [False, True], ids=["bytes", "file"])
def test_size_limit_exactly_max_is_saved_and_max_plus_one_leaves_nothing(
    tmp_path: Path, as_file: bool
) -> None:
    store = ModelStore(tmp_path / "models", max_model_bytes=MiB + 10)

    def data(n: int) -> bytes | io.BytesIO:
        return io.BytesIO(b"x" * n) if as_file else b"x" * n

    ok = store.save("m", data(MiB + 10))
    assert ok["size"] == MiB + 10
    with pytest.raises(ModelStoreError, match=r"exceeds max_model_bytes=1048586"):
        store.save("m", data(MiB + 11))
    assert set(os.listdir(store.root / "m")) == {"manifest.json", "1.bin", ".lock"}
    assert store.list_models() == [ok]


def test_limit_is_enforced_while_streaming_an_endless_source(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models", max_model_bytes=3 * MiB)
    with pytest.raises(ModelStoreError, match="at least"):
        store.save("m", Endless())
    assert set(os.listdir(store.root / "m")) == set()  # no temp, no manifest


def test_a_large_artifact_is_streamed_not_held_in_memory(store: ModelStore) -> None:
    total = 48 * MiB
    tracemalloc.start()
    try:
        info = store.save("big", Endless(total))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info["size"] == total
    assert peak < 8 * MiB, f"peak {peak / MiB:.1f} MiB while saving {total / MiB:.0f} MiB"


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "",
        "..",
        ".",
        "../x",
        "a/b",
        "a\\b",
        "/etc/passwd",
        "x\0y",
        ".hidden",
        "-opt",
        "é",
        "a" * 201,
    ],
)
def test_names_that_could_escape_or_hide_are_refused(store: ModelStore, name: str) -> None:
    with pytest.raises(ModelStoreError):
        store.save(name, b"x")
    with pytest.raises(ModelStoreError):
        store.save("ok", b"x", version=name)
    assert not store.root.exists()  # refused before anything is created


def test_reading_with_a_traversal_name_is_refused(store: ModelStore) -> None:
    for call in (store.latest, store.list_models, store.info, store.load, store.verify):
        with pytest.raises(ModelStoreError, match="separators"):
            call("../../etc")


def test_valid_names(store: ModelStore) -> None:
    for name in ("ranker", "ranker_v2.onnx", "a-b.c_d", "0", "_x"):
        assert check_name(name) == name


# -- integrity and native loading -------------------------------------------------------------


def test_checksum_mismatch_is_a_clear_error(store: ModelStore) -> None:
    info = store.save("m", b"good weights")
    path = Path(info["path"])
    path.write_bytes(b"evil weights")  # same size, different bytes
    with pytest.raises(ModelStoreError, match=r"model 'm' version '1' is corrupted.*sha256"):
        store.load("m")
    path.write_bytes(b"good")
    with pytest.raises(ModelStoreError, match=r"corrupted: .* has 4 bytes"):
        store.verify("m", "1")
    path.unlink()
    with pytest.raises(ModelStoreError, match="missing"):
        store.load("m", 1)


def tiny_onnx_model() -> bytes:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime the `native` extra allows
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_load_returns_none_without_the_native_extra(
    store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    store.save("tiny.onnx", b"\x08\x08 not parsed without a backend")
    store.save("clf", b"bytes", format="onnx")
    assert store.load("tiny.onnx") is None
    assert store.load("clf") is None


def test_load_returns_an_onnxruntime_session_with_the_native_extra(store: ModelStore) -> None:
    ort = pytest.importorskip("onnxruntime")
    np = pytest.importorskip("numpy")
    info = store.save("tiny.onnx", tiny_onnx_model())
    assert info["path"].endswith("/tiny.onnx/1.onnx")
    session = store.load("tiny.onnx")
    assert isinstance(session, ort.InferenceSession)
    (y,) = session.run(None, {"x": np.array([[-1.0, 0.0, 2.5]], dtype=np.float32)})
    assert y.tolist() == [[0.0, 0.0, 2.5]]


def test_a_non_onnx_artifact_under_an_onnx_name_is_a_clear_error(store: ModelStore) -> None:
    pytest.importorskip("onnxruntime")
    store.save("broken.onnx", b"not a protobuf at all")
    with pytest.raises(ModelStoreError, match="onnxruntime cannot load it"):
        store.load("broken.onnx")


# -- crashes and concurrency (real processes) -------------------------------------------------


def child(code: str, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], **kwargs)


def test_sigkilled_writer_leaves_previous_version_and_no_visible_partial(
    store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = store.save("m", b"version one")
    manifest = (store.root / "m" / "manifest.json").read_bytes()
    writer = child(
        """
        import sys
        from sinks.models import ModelStore
        ModelStore(sys.argv[1], 64 * 1024 * 1024).save("m", sys.stdin.buffer)
        """,
        str(store.root),
        stdin=subprocess.PIPE,
    )
    try:
        for _ in range(6):  # 6 MiB arrive, then the writer waits for more
            writer.stdin.write(b"\x01" * MiB)
        writer.stdin.flush()
        deadline = time.monotonic() + 30
        while not any(p.stat().st_size >= 4 * MiB for p in (store.root / "m").glob(".upload.*")):
            assert time.monotonic() < deadline, "the writer never got going"
            time.sleep(0.05)
        writer.send_signal(signal.SIGKILL)
        assert writer.wait(timeout=30) == -signal.SIGKILL
    finally:
        writer.kill()
        writer.stdin.close()
    assert visible(store.root / "m") == {"manifest.json", "1.bin"}
    assert (store.root / "m" / "manifest.json").read_bytes() == manifest
    assert store.list_models() == [before]
    assert store.verify("m") == before
    # The dead writer's hidden temp is swept by the next save once it is no longer fresh.
    monkeypatch.setattr(models, "STALE_UPLOAD_SECONDS", 0.0)
    store.save("m", b"version two")
    assert not list((store.root / "m").glob(".upload.*"))


def test_two_processes_saving_one_name_at_once_both_complete(store: ModelStore) -> None:
    code = """
        import hashlib, pathlib, sys, time
        from sinks.models import ModelStore

        root, me, other = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
        store = ModelStore(root, 64 * 1024 * 1024)
        (root.parent / f"ready-{me}").touch()
        while not (root.parent / f"ready-{other}").exists():  # start together
            time.sleep(0.01)

        class Slow:  # 4 MiB in 16 pieces, so the two uploads overlap
            def __init__(self, byte):
                self.byte, self.left = byte, 16
            def read(self, n):
                if not self.left:
                    return b""
                self.left -= 1
                time.sleep(0.01)
                return self.byte * (256 * 1024)

        for i in range(3):
            info = store.save("shared", Slow(bytes([ord(me) + i])))
            print(info["version"], info["sha256"], flush=True)
        """
    store.root.mkdir(parents=True)
    procs = [
        child(code, str(store.root), me, other, stdout=subprocess.PIPE, text=True)
        for me, other in (("a", "b"), ("b", "a"))
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    reported = dict(line.split() for out in outputs for line in out.splitlines())
    listed = {i["version"]: i["sha256"] for i in store.list_models("shared")}
    assert listed == reported
    assert sorted(listed, key=int) == ["1", "2", "3", "4", "5", "6"]
    for version in listed:
        info = store.verify("shared", version)
        assert info["size"] == 4 * MiB
    assert visible(store.root / "shared") == {"manifest.json"} | {f"{v}.bin" for v in listed}


# -- CLI ------------------------------------------------------------------------------------


@pytest.fixture
def cli_config(tmp_path: Path) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(
        f"json_engine:\n  models: {{path: '{tmp_path / 'models'}', max_model_bytes: 100}}\n"
    )
    return path


def test_cli_save_list_rm(tmp_path: Path, cli_config: Path) -> None:
    runner = CliRunner()
    artifact = tmp_path / "weights.onnx"
    artifact.write_bytes(b"w" * 100)
    sha = hashlib.sha256(b"w" * 100).hexdigest()

    saved = runner.invoke(models_app, ["save", "ranker", str(artifact), "-c", str(cli_config)])
    assert saved.exit_code == 0, saved.output
    assert saved.stdout.startswith(f"saved ranker\t1\t100\t{sha}\t")
    assert saved.stdout.rstrip().endswith("/models/ranker/1.onnx")

    again = ["save", "ranker", str(artifact), "--version", "v2", "--config", str(cli_config)]
    assert runner.invoke(models_app, again).exit_code == 0

    listed = runner.invoke(models_app, ["list", "-c", str(cli_config)])
    assert listed.exit_code == 0, listed.output
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("ranker", "1", "100", sha),
        ("ranker", "v2", "100", sha),
    ]

    removed = runner.invoke(models_app, ["rm", "ranker", "1", "-c", str(cli_config)])
    assert removed.exit_code == 0, removed.output
    assert removed.stdout == "removed ranker version 1\n"
    listed = runner.invoke(models_app, ["list", "ranker", "-c", str(cli_config)])
    assert [line.split("\t")[1] for line in listed.stdout.splitlines()] == ["v2"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["save", "../x", "FILE"], "must not contain path separators"),
        (["save", "big", "BIG"], "exceeds max_model_bytes=100"),
        (["save", "m", "MISSING"], "cannot read"),
        (["rm", "nothing", "1"], "no model 'nothing'"),
    ],
)
def test_cli_errors_exit_1_with_one_line(
    tmp_path: Path, cli_config: Path, args: list[str], message: str
) -> None:
    (tmp_path / "FILE").write_bytes(b"x")
    (tmp_path / "BIG").write_bytes(b"x" * 101)
    paths = {"FILE", "BIG", "MISSING"}
    argv = [str(tmp_path / a) if a in paths else a for a in args] + ["-c", str(cli_config)]
    result = CliRunner().invoke(models_app, argv)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
