"""A peer venv that cannot run (its interpreter gone, its script not executable) is a note in the report,
never the end of a bench whose figures are all measured by then; a variant that fails is kept as failed,
with the loads it measured before."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

import loadtests.bench as bench
from loadtests.bench_models import BenchModels
from loadtests.peers import infinity_missing

from .conftest import stand_in_server


def _venv(peers: Path, interpreter: Path, mode: int = 0o755, code: str = "import sys\n") -> Path:
    """What `make peers` leaves: the marker, and pip's script whose #! line names the venv's python."""
    venv = peers / "infinity"
    (venv / "bin").mkdir(parents=True)
    (venv / ".installed").write_text("")
    script = venv / "bin" / "infinity_emb"
    script.write_text(f"#!{interpreter}\n{code}")
    script.chmod(mode)
    return script


def _measure(
    peers: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, port: int, variants: tuple = ("fp32",)
) -> tuple[list, list]:
    """measure_infinity past its install check and model export (both stubbed), to the server's start."""
    monkeypatch.setattr(bench, "infinity_missing", lambda _folder: None)
    monkeypatch.setattr(bench, "prepare_infinity_models", lambda *_a, **_k: dict.fromkeys(variants, tmp_path))
    options = bench.BenchOptions(peers_dir=peers, out_dir=tmp_path / "out", infinity_variants=list(variants),
                                 peer_port=port, ready_timeout_s=5, duration_s=1, warmup_s=0,
                                 attach_timeout_s=10)  # fmt: skip
    models = BenchModels(repository=str(tmp_path), base_model="m", precision="int8", lora=["l0"],
                         frozen=["f0"], train_steps=1)  # fmt: skip
    return bench.measure_infinity(models, bench._Runner(options, None, "python"), lambda _msg: None)


def test_a_venv_whose_python_is_gone_is_not_measured(tmp_path: Path) -> None:
    peers = tmp_path / "peers"
    _venv(peers, peers / "infinity" / "bin" / "python")  # the link to a removed base Python: nothing
    why = infinity_missing(peers) or ""
    assert f"its interpreter {peers / 'infinity' / 'bin' / 'python'} is missing" in why
    assert "rerun `make peers`" in why


def test_a_script_that_is_not_executable_is_not_measured(tmp_path: Path) -> None:
    peers = tmp_path / "peers"
    script = _venv(peers, Path("/bin/sh"), mode=0o644)
    assert infinity_missing(peers) == f"{script} is not executable (rerun `make peers`)"


def test_an_infinity_that_cannot_start_is_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.local_ray import free_loopback_port

    peers = tmp_path / "peers"
    script = _venv(peers, peers / "infinity" / "bin" / "python")
    systems, notes = _measure(peers, tmp_path, monkeypatch, free_loopback_port())
    (system,) = systems
    assert system["results"] == [] and system["failed"].startswith(f"cannot run {script.resolve()}")
    (note,) = notes
    assert note.startswith(f"Infinity 0.0.78 optimum fp32 not measured: cannot run {script.resolve()}")
    assert note.endswith("rerun `make peers`")


def test_an_infinity_whose_port_is_taken_is_a_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    peers = tmp_path / "peers"
    _venv(peers, Path("/bin/sh"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        systems, notes = _measure(peers, tmp_path, monkeypatch, port)
    (system,) = systems
    assert system["results"] == [] and system["failed"].startswith(f"127.0.0.1:{port} is in use")
    (note,) = notes
    assert note.startswith(f"Infinity 0.0.78 optimum fp32 not measured: 127.0.0.1:{port} is in use")


# An Infinity stand-in: ready at once, each classify answered at once with one result per text.
PEER = stand_in_server('{"unix": 0}', "input", "data", port_arg="--port")


def test_a_variant_that_fails_midway_is_kept_as_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loadtests.bench_report import best_peer
    from serving.local_ray import free_loopback_port

    peers = tmp_path / "peers"
    _venv(peers, Path(sys.executable), code=PEER)
    real_load, loads = bench._Runner.load, []

    def load(run: bench._Runner, url: str, *args: object, **kwargs: object) -> dict:
        loads.append(url)
        if len(loads) == 4:  # int8's second load (fp32's two come first)
            raise bench.BenchError(f"every request to {url} failed (1 text(s) per request, c=32: HTTP 500)")
        return real_load(run, url, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bench._Runner, "load", load)
    systems, notes = _measure(peers, tmp_path, monkeypatch, free_loopback_port(), ("fp32", "int8"))
    fp32, int8 = systems
    assert "failed" not in fp32 and [r["load"] for r in fp32["results"]] == ["1 text, c=8", "1 text, c=32"]
    assert [r["load"] for r in int8["results"]] == ["1 text, c=8"] and int8["results"][0]["requests"] > 0
    assert int8["failed"].startswith("every request to http://127.0.0.1:")
    (note,) = notes
    assert note.startswith("Infinity 0.0.78 optimum int8 failed: every request")
    # the best Infinity at c=32 is not fp32's by default: it is not known
    assert best_peer({"peers": systems}, "1 text, c=32") is None
    assert best_peer({"peers": systems}, "1 text, c=8") is not None
