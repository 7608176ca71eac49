"""A peer venv that cannot run (its interpreter gone, its script not executable) is a note in the report,
never the end of a bench whose figures are all measured by then."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import loadtests.bench as bench
from loadtests.bench_models import BenchModels
from loadtests.peers import infinity_missing


def _venv(peers: Path, interpreter: Path, mode: int = 0o755) -> Path:
    """What `make peers` leaves: the marker, and pip's script whose #! line names the venv's python."""
    venv = peers / "infinity"
    (venv / "bin").mkdir(parents=True)
    (venv / ".installed").write_text("")
    script = venv / "bin" / "infinity_emb"
    script.write_text(f"#!{interpreter}\nimport sys\n")
    script.chmod(mode)
    return script


def _measure(peers: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, port: int) -> tuple[list, list]:
    """measure_infinity past its install check and model export (both stubbed), to the server's start."""
    monkeypatch.setattr(bench, "infinity_missing", lambda _folder: None)
    monkeypatch.setattr(bench, "prepare_infinity_models", lambda *_a, **_k: {"fp32": tmp_path})
    options = bench.BenchOptions(peers_dir=peers, out_dir=tmp_path / "out", infinity_variants=["fp32"],
                                 peer_port=port, ready_timeout_s=5)  # fmt: skip
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
    assert systems == []
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
    assert systems == []
    (note,) = notes
    assert note.startswith(f"Infinity 0.0.78 optimum fp32 not measured: 127.0.0.1:{port} is in use")
