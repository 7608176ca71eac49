"""`make demo` is quiet: the demo's lines and its step bars reach the terminal; what libraries print
(Python prints, warnings, C-level writes to fd 1/2) goes to the log file; --verbose keeps it all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = """
import os, sys, warnings
from pathlib import Path
from labelwise import demo
if sys.argv[2] == "quiet":
    demo.TERMINAL.to_log(Path(sys.argv[1]))
demo._log("step one starts")
with demo.TERMINAL.step("train toy", total=3) as bar:
    print("{'loss': 0.7, 'epoch': 1.0}")           # what HF Trainer's PrinterCallback prints
    warnings.warn("torch_dtype is deprecated")     # a library warning
    os.write(2, b"[W onnxruntime] C++ side warning\\n")  # below Python
    for _ in range(3):
        bar.advance()
demo._log("step one done")
"""


def _run(tmp_path: Path, mode: str) -> tuple[subprocess.CompletedProcess, str]:
    log = tmp_path / "demo.log"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(log), mode], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return done, log.read_text() if log.exists() else ""


def test_quiet_mode_sends_library_output_to_the_log(tmp_path: Path) -> None:
    done, log = _run(tmp_path, "quiet")
    terminal = done.stdout + done.stderr
    assert "step one starts" in done.stdout and "step one done" in done.stdout
    assert "[demo] train toy" in done.stderr and "3/3" in done.stderr  # the step's one bar, finished
    for noise in ("'loss': 0.7", "torch_dtype is deprecated", "C++ side warning"):
        assert noise not in terminal, noise
        assert noise in log, noise


def test_verbose_mode_keeps_everything_on_the_terminal(tmp_path: Path) -> None:
    done, log = _run(tmp_path, "verbose")
    terminal = done.stdout + done.stderr
    for line in ("step one starts", "'loss': 0.7", "torch_dtype is deprecated", "C++ side warning"):
        assert line in terminal, line
    assert log == ""
