"""Peers in `labelwise bench`: `make peers` without the index, Infinity's model folders, all-core ceiling."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from loadtests.bench import BenchOptions, _Runner, measure_infinity
from loadtests.bench_models import BenchModels
from loadtests.load_drivers import resolve_driver
from loadtests.peers import infinity_missing, prepare_infinity_models

from .conftest import EXIT_ON_SIGINT

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_peers_without_the_index_says_so_and_leaves_nothing(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",  # nothing listens on the discard port
        "PIP_CONFIG_FILE": os.devnull,  # no configured mirror or wheel folder to fall back on
        "PIP_FIND_LINKS": "",
        "PIP_EXTRA_INDEX_URL": "",
        "PIP_RETRIES": "0",
    }
    peers = tmp_path / "peers"
    out = subprocess.run(["make", "-C", str(REPO), "peers", f"PEERS_DIR={peers}"], env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode != 0
    assert "could not install infinity-emb[server,optimum]==0.0.78" in out.stderr
    assert "http://127.0.0.1:9/simple" in out.stderr
    assert "`labelwise bench` runs without the infinity peer" in out.stderr
    assert not (peers / "infinity").exists()  # no half-made venv for the bench to trip on
    assert "Traceback" not in out.stderr


def test_bench_runs_without_an_installed_peer(tmp_path: Path) -> None:
    assert "make peers" in (infinity_missing(tmp_path) or "")
    options = BenchOptions(peers_dir=tmp_path, out_dir=tmp_path / "out")
    models = BenchModels(repository=str(tmp_path), base_model="m", precision="int8", lora=["l0"],
                         frozen=["f0"], train_steps=1)  # fmt: skip
    said: list[str] = []
    systems, notes = measure_infinity(models, _Runner(options, "texts.txt", "python"), said.append)
    assert systems == []
    assert len(notes) == 1 and notes[0].startswith("Infinity not measured: Infinity is not installed")
    assert said and said[0].startswith("infinity: skipped")


def test_infinity_folders_hold_an_optimum_export_with_the_labels(
    tiny_bench: BenchModels, tmp_path: Path
) -> None:
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    said: list[str] = []
    folders = prepare_infinity_models(tiny_bench.repository, tiny_bench.primary, tmp_path, said.append)
    assert set(folders) == {"fp32"}  # the tiny bench publishes fp32 only: no int8 graph to hand over
    fp32 = folders["fp32"]
    config = json.loads((fp32 / "config.json").read_text())
    assert list(config["id2label"].values()) == ["question", "short", "long"]
    session = ort.InferenceSession(str(fp32 / "model.onnx"), providers=["CPUExecutionProvider"])
    encoding = Tokenizer.from_file(str(fp32 / "tokenizer.json")).encode("where is my parcel?")
    feeds = {"input_ids": np.array([encoding.ids]), "attention_mask": np.array([encoding.attention_mask])}
    logits = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})[0]
    assert logits.shape == (1, 3)
    again: list[str] = []
    assert (
        prepare_infinity_models(tiny_bench.repository, tiny_bench.primary, tmp_path, again.append) == folders
    )
    assert again[0].startswith("infinity: reusing")


def test_ceiling_processes_run_together_and_sum(tiny_bench: BenchModels) -> None:
    from loadtests.ceiling import measure_ceiling_processes

    result = measure_ceiling_processes(
        2, tiny_bench.repository, tiny_bench.primary, None, "fp32", batch_sizes=(1, 4), seconds_per_size=0.3
    )
    assert (result["processes"], result["threads"]) == (2, 1)
    assert set(result["seq_per_s_by_batch_size"]) == {"1", "4"}
    assert result["seq_per_s"] == max(result["seq_per_s_by_batch_size"].values()) > 0


def test_resident_ceiling_measures_again_on_each_call(tiny_bench: BenchModels) -> None:
    from loadtests.ceiling import ResidentCeiling

    with ResidentCeiling(2, 1, tiny_bench.repository, tiny_bench.primary, None, "fp32", 4, 16384) as resident:
        first, second = resident.measure(0.3), resident.measure(0.3)
        children = resident._children.procs
        assert all(child.poll() is None for child in children)  # waiting for the next call, not gone
    assert first > 0 and second > 0 and first != second  # two measurements, not one figure repeated
    assert all(child.poll() is not None for child in children)  # closed with the context


def test_resident_ceiling_follows_each_rounds_best_batch_size(tiny_bench: BenchModels) -> None:
    """Warm at every batch size of the ceiling; each round's fresh ceiling (its variant with the resident's
    processes x threads) sets the batch size the loads of that round are bracketed at."""
    from loadtests.bench import BenchOptions, _Runner
    from loadtests.ceiling import ResidentCeiling

    said: list[str] = []
    run = _Runner(BenchOptions(), None, "python")
    model = (tiny_bench.repository, tiny_bench.primary, None, "fp32")
    run.resident = resident = ResidentCeiling(2, 1, *model, 4, 16384, (1, 4))
    try:
        assert resident.warm_sizes == (4, 1)
        at_four = resident.measure(0.3)
        fresh = {"variants": [
            {"threads": 2, "best_batch_size": 4},  # the 1-process variant: not the resident's layout
            {"processes": 2, "threads": 1, "best_batch_size": 1},
        ]}  # fmt: skip
        run.follow_ceiling(fresh, said.append)
        assert resident.batch_size == 1 and said == ["ceiling around loads: batch 4 -> 1, this round's best"]
        at_one = resident.measure(0.3)
        assert at_four > 0 and at_one > 0
        run.follow_ceiling({"variants": [{"processes": 2, "threads": 1, "best_batch_size": 64}]}, said.append)
        assert resident.batch_size == 1  # not warm at 64: kept
        resident.batch_size = 64
        with pytest.raises(ValueError, match="batch size 64 is not one of"):
            resident.measure(0.1)
    finally:
        run.close()


def test_ceiling_process_failure_is_reported(tmp_path: Path) -> None:
    from loadtests.ceiling import measure_ceiling_processes

    with pytest.raises(RuntimeError, match="a ceiling process exited before it was ready"):
        measure_ceiling_processes(2, str(tmp_path), "absent", None, "fp32", seconds_per_size=0.1)
    from loadtests.ceiling import ResidentCeiling

    with pytest.raises(RuntimeError, match=r"a ceiling process exited before it was ready(.|\n)*absent"):
        ResidentCeiling(1, 1, str(tmp_path), "absent", None, "fp32", 4, 16384)


PEERS_DIR = REPO / "var" / "peers"


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.skipif(
    infinity_missing(PEERS_DIR) is not None, reason="Infinity is not installed (`make peers`)"
)
def test_infinity_serves_the_bench_scenario_under_load(tiny_bench: BenchModels, tmp_path: Path) -> None:
    from .conftest import _free_port

    options = BenchOptions(peers_dir=PEERS_DIR, out_dir=tmp_path, peer_port=_free_port(), duration_s=1,
                           warmup_s=0.5, ready_timeout_s=120)  # fmt: skip
    said: list[str] = []
    systems, notes = measure_infinity(tiny_bench, _Runner(options, None, resolve_driver("auto")), said.append)
    assert notes == [f"Infinity 0.0.78 optimum int8 not measured: {tiny_bench.primary} has no int8 graph"]
    (fp32,) = systems
    assert [r["load"] for r in fp32["results"]] == ["1 text, c=8", "1 text, c=32"]
    for row in fp32["results"]:
        assert row["requests"] > 0 and row["errors"] == 0
        assert row["memory"]["pss_mb"] > 0 and row["memory"]["processes"] >= 1
    assert (Path(tiny_bench.repository) / "_peer-models" / "infinity").is_dir()
    assert "infinity fp32: stopping" in said


def test_a_paused_server_tree_is_stopped_and_continued(tmp_path: Path) -> None:
    import sys
    import time

    import psutil

    from loadtests.processes import ServerProcess

    # a parent and a child that count in a file: both must stop counting while paused, and go on after
    script = (
        "import os, subprocess, sys, time\n"
        "if len(sys.argv) == 1:\n"
        "    subprocess.Popen([sys.executable, __file__, 'child'])\n"
        "while True:\n"
        "    open(os.path.join(os.path.dirname(__file__), f'tick-{os.getpid()}'), 'a').write('.')\n"
        "    time.sleep(0.02)\n"
    )
    path = tmp_path / "ticks.py"
    path.write_text(script)
    proc = subprocess.Popen([sys.executable, str(path)])
    server = ServerProcess("ticker", "http://127.0.0.1:1", proc, tmp_path / "log")
    try:
        deadline = time.monotonic() + 20
        while len(list(tmp_path.glob("tick-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = server.tree()
        assert len(tree) == 2

        def ticks() -> list[int]:
            return [len((tmp_path / f"tick-{p.pid}").read_text()) for p in tree]

        with server.paused():
            assert all(p.status() == psutil.STATUS_STOPPED for p in tree)
            time.sleep(0.1)
            frozen = ticks()
            time.sleep(0.3)
            assert ticks() == frozen
        time.sleep(0.3)
        assert all(p.status() != psutil.STATUS_STOPPED for p in tree)
        assert all(after > before for after, before in zip(ticks(), frozen, strict=True))
    finally:
        for p in server.tree()[::-1]:
            p.kill()
        proc.wait()


def test_a_terminated_bench_continues_the_tree_it_paused(tmp_path: Path) -> None:
    """SIGTERM in the middle of a paused ceiling measurement: the bench process exits 143 through its
    `finally` blocks (terminated_as_exit), and the server tree it had stopped runs again."""
    import signal
    import sys
    import time

    import psutil

    driver = tmp_path / "driver.py"
    driver.write_text(
        "import subprocess, sys, time\n"
        "from pathlib import Path\n"
        "from loadtests.processes import ServerProcess, terminated_as_exit\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "server = ServerProcess('sleeper', 'http://127.0.0.1:1', child, Path('log'))\n"
        "with terminated_as_exit(), server.paused():\n"
        "    print(child.pid, flush=True)\n"
        "    time.sleep(30)\n"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, str(driver)], stdout=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    child = None
    try:
        child = psutil.Process(int(proc.stdout.readline()))  # type: ignore[union-attr]
        assert child.status() == psutil.STATUS_STOPPED
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 143 and time.monotonic() - start < 5
        assert child.status() != psutil.STATUS_STOPPED  # continued on the way out
    finally:
        if proc.poll() is None:
            proc.kill()
        if child is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.resume()
                child.kill()


# A peer that starts and never answers; a stop's SIGINT ends it (EXIT_ON_SIGINT).
NEVER_READY = f"{EXIT_ON_SIGINT}; import time; time.sleep(60)"


def test_an_infinity_that_never_gets_ready_is_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer that starts but never answers /health raises ServerNotUpError (a TimeoutError, not a
    BenchError): still a note under the table, and the bench goes on."""
    import sys

    import loadtests.bench as bench
    from serving.local_ray import free_loopback_port

    monkeypatch.setattr(bench, "infinity_missing", lambda _folder: None)
    monkeypatch.setattr(bench, "prepare_infinity_models", lambda *_a, **_k: {"fp32": tmp_path})
    monkeypatch.setattr(bench, "infinity_command", lambda *_a: [sys.executable, "-c", NEVER_READY])
    options = BenchOptions(out_dir=tmp_path / "out", ready_timeout_s=2, infinity_variants=["fp32"],
                           peer_port=free_loopback_port())  # fmt: skip
    options.out_dir.mkdir()
    models = BenchModels(repository=str(tmp_path), base_model="m", precision="int8", lora=["l0"],
                         frozen=["f0"], train_steps=1)  # fmt: skip
    said: list[str] = []
    systems, notes = measure_infinity(models, _Runner(options, None, "python"), said.append)
    (fp32,) = systems  # kept as failed: the best Infinity is not read from the others
    assert fp32["results"] == [] and "not ready" in fp32["failed"]
    assert len(notes) == 1 and notes[0].startswith("Infinity 0.0.78 optimum fp32 failed: ")
    assert "not ready" in notes[0] and "infinity fp32: stopping" in said


def test_wrk_is_killed_when_the_wait_is_interrupted(tmp_path: Path) -> None:
    """SIGTERM (as SystemExit) or any error while waiting for wrk: wrk stops loading the server."""
    import signal
    import time

    import psutil

    from loadtests.wrk import _run_timed

    pid_file = tmp_path / "pid"

    def interrupt(_signum: int, _frame: object) -> None:
        raise SystemExit(143)

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        with pytest.raises(SystemExit):
            _run_timed(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"], bound_s=60)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    pid = int(pid_file.read_text())
    time.sleep(0.1)
    assert not psutil.pid_exists(pid)  # killed and reaped, not left loading for its 30 s


def test_the_lora_bench_turns_sigterm_into_an_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    """`labelwise bench --lora-modes`: a SIGTERM runs its `finally` blocks (its server is stopped)."""
    import signal

    import loadtests.bench_lora as bench_lora

    cleaned: list[str] = []

    def body(_options: object, _say: object) -> dict:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            return {}
        finally:
            cleaned.append("server stopped")

    monkeypatch.setattr(bench_lora, "_run_lora_bench", body)
    with pytest.raises(SystemExit) as exc:
        bench_lora.run_lora_bench(bench_lora.LoraBenchOptions())
    assert exc.value.code == 143 and cleaned == ["server stopped"]
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back


def test_a_ceiling_process_that_never_gets_ready_is_killed_and_refused() -> None:
    import sys
    import time

    from loadtests.ceiling import _Children

    start = time.monotonic()
    with pytest.raises(RuntimeError, match="not ready within 1 s"):
        _Children([sys.executable, "-c", "import time; time.sleep(60)"], processes=2, ready_timeout_s=1)
    assert time.monotonic() - start < 10
