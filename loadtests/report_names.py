"""Report file names that never overwrite an earlier report.

Reports are named by their start time to the second (`bench-20261207-033554.json`); two runs ending in the
same second (two benches in two shells, a run interrupted at once) would overwrite the first one's files.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path


def report_stem(folder: Path, prefix: str, now: datetime | None = None) -> Path:
    """`folder/<prefix><YYYYmmdd-HHMMSS>`, or with `-2`, `-3`, ... appended when a file of that stem is
    there already (any suffix: Locust writes `<stem>_stats.csv`, `<stem>.html`, ...)."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    taken = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    stem, n = f"{prefix}{stamp}", 1
    while any(name.startswith(stem) and not name[len(stem) :][:1].isdigit() for name in taken):
        n += 1
        stem = f"{prefix}{stamp}-{n}"
    return folder / stem
