"""Which client generates a bench load: wrk when it is installed, else the Python generator."""

from __future__ import annotations

from typing import Any

from .errors import BenchError
from .loadgen import LoadSpec, run_in_subprocess
from .sentences import load_sentences
from .wrk import find_wrk, run_wrk

DRIVERS = ("auto", "wrk", "python")


def resolve_driver(name: str) -> str:
    """auto -> wrk when on PATH, else python; asking for wrk without it is an error that says how."""
    if name not in DRIVERS:
        raise BenchError(f"unknown load driver {name!r}; choose one of {', '.join(DRIVERS)}")
    if name == "auto":
        return "wrk" if find_wrk() else "python"
    if name == "wrk" and find_wrk() is None:
        raise BenchError("--load-driver wrk: wrk is not on PATH; `make wrk` installs Debian's package")
    return name


def run_one_load(
    spec: LoadSpec, texts_file: str | None, driver: str, ready_timeout_s: float, wrk_threads: int = 1
) -> dict[str, Any]:
    """One closed-loop load with the resolved driver; the LoadResult fields as a dict."""
    if driver == "wrk":
        return run_wrk(spec, load_sentences(texts_file), wrk_threads, ready_timeout_s)
    return run_in_subprocess(spec, texts_file, ready_timeout_s=ready_timeout_s)
