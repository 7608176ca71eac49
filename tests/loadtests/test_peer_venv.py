"""`make peers` without the package index: a venv installed before is kept and used, none is half-made."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import _free_port

SCRIPT = Path(__file__).resolve().parents[2] / "loadtests" / "peer_requirements" / "make_peer_venv.sh"


def _offline_make_peers(venv: Path) -> subprocess.CompletedProcess[str]:
    """The script as `make peers` runs it, with an index nothing listens on and no wheel folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(
        PYTHON=sys.executable, PIP_CONFIG_FILE=os.devnull, PIP_NO_CACHE_DIR="1", PIP_RETRIES="0",
        PIP_DEFAULT_TIMEOUT="5", PIP_INDEX_URL=f"http://127.0.0.1:{_free_port()}/simple",
    )  # fmt: skip
    return subprocess.run(
        ["bash", str(SCRIPT), "infinity", str(venv)], capture_output=True, text=True, env=env, timeout=120
    )


def test_offline_an_installed_peer_older_than_its_pins_is_kept(tmp_path: Path) -> None:
    venv = tmp_path / "infinity"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "infinity_emb").write_text("#!/bin/sh\n")
    (venv / ".installed").touch()
    os.utime(venv / ".installed", (946_684_800, 946_684_800))  # 2000: the pins changed since
    out = _offline_make_peers(venv)
    assert out.returncode == 0, out.stderr  # `make peers` goes on; the bench uses the installed peer
    assert (venv / ".installed").is_file() and (venv / "bin" / "infinity_emb").is_file()
    assert f"could not update the infinity peer in {venv}" in out.stderr
    assert "used as installed, stale against" in out.stderr


def test_offline_without_a_peer_nothing_is_made(tmp_path: Path) -> None:
    venv = tmp_path / "infinity"
    out = _offline_make_peers(venv)
    assert out.returncode == 1
    assert (
        "the package index did not serve it" in out.stderr and "runs without the infinity peer" in out.stderr
    )
    assert not venv.exists()
