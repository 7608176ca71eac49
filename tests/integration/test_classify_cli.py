"""`labelwise classify` end to end: 5k rows in-process on the serving engine, the same rows through the
real Ray Serve app with --url, resuming a cut output, and a bad row named with the rows before it kept."""

from __future__ import annotations

import csv
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import toy_sentences

from .conftest import ServedApp

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SCENARIO = "sentiment_full"
N_ROWS = 5000


def _classify(*args: str | Path, timeout_s: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "labelwise.cli", "classify", "--no-progress", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    rows = [s for label in ("positive", "negative", "neutral") for s in toy_sentences(label, 1700, seed=7)]
    random.Random(7).shuffle(rows)
    return rows[:N_ROWS]


@pytest.fixture(scope="module")
def scored(
    served: ServedApp, texts: list[str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """The 5k-row CSV and its in-process output (version 1 of the scenario, no server involved)."""
    folder = tmp_path_factory.mktemp("classify")
    source = folder / "reviews.csv"
    with open(source, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "review"])
        writer.writerows((f"r{i}", t) for i, t in enumerate(texts))
    out = folder / "labels.jsonl"
    done = _classify(
        "-s", SCENARIO, "-i", source, "-o", out, "--text-column", "review", "-r", served.repo.root, "-v", "1"
    )
    assert done.returncode == 0, done.stderr
    assert re.search(rf"scored {N_ROWS} rows in [\d.]+ s \(\d+ rows/s\)", done.stdout), done.stdout
    print(done.stdout.strip())  # the throughput, for the record (pytest -s)
    return source, out


def test_in_process_scores_every_row_in_order_as_the_published_model(
    served: ServedApp, texts: list[str], scored: tuple[Path, Path]
) -> None:
    rows = _rows(scored[1])
    assert [r["row"] for r in rows] == list(range(N_ROWS))
    assert {r["version"] for r in rows} == {1}
    reference = served.references[SCENARIO]
    sample = random.Random(0).sample(range(N_ROWS), 300)
    probs = reference.probs([texts[i] for i in sample])
    for i, p in zip(sample, probs, strict=True):
        assert rows[i]["label"] == reference.labels[int(p.argmax())]
        assert rows[i]["score"] == pytest.approx(float(p.max()), abs=1e-4)


def test_a_cut_output_is_resumed_to_the_same_file(served: ServedApp, scored: tuple[Path, Path]) -> None:
    source, full = scored
    partial = full.with_name("partial.jsonl")
    lines = full.read_text(encoding="utf-8").splitlines(keepends=True)
    partial.write_text("".join(lines[:3210]) + lines[3210][:12], encoding="utf-8")
    done = _classify(
        "-s",
        SCENARIO,
        "-i",
        source,
        "-o",
        partial,
        "--text-column",
        "review",
        "-r",
        served.repo.root,
        "-v",
        "1",
    )
    assert done.returncode == 0, done.stderr
    assert f"scored {N_ROWS - 3210} rows" in done.stdout and "3210 already in the output" in done.stdout
    assert partial.read_text(encoding="utf-8") == full.read_text(encoding="utf-8")


def test_a_bad_row_exits_2_naming_it_and_keeps_the_rows_before(served: ServedApp, tmp_path: Path) -> None:
    source = tmp_path / "broken.csv"
    good = "".join(f"{t}\n" for t in toy_sentences("positive", 40, seed=3))
    source.write_bytes(b"text\n" + good.encode() + b"na\xefve\n" + b"after the bad row\n")
    out = tmp_path / "out.csv"
    done = _classify("-s", SCENARIO, "-i", source, "-o", out, "-r", served.repo.root, "-v", "1")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("error: ") and "broken.csv: row 41 (line 42): invalid UTF-8" in lines[0]
    with open(out, newline="") as fh:
        kept = list(csv.DictReader(fh))
    assert [int(r["row"]) for r in kept] == list(range(40))


def test_a_row_its_model_reads_nothing_of_is_refused_alike_in_both_modes(
    served: ServedApp, tmp_path: Path
) -> None:
    """Only markup, which the version's cleaning removes: the server refuses it (422) and scoring
    in-process refused it too, where it used to score the empty text; both name the file's row."""
    served.wait_for(lambda: served.client.get("/v1/scenarios").json()["scenarios"][0]["version"], 90, "load")
    source = tmp_path / "markup.csv"
    good = "".join(f"{t}\n" for t in toy_sentences("negative", 40, seed=5))
    source.write_text(f"text\n{good}<p> </p>\nafter it\n", encoding="utf-8")
    for where in (["-r", str(served.repo.root), "-v", "1"], ["--url", served.url]):
        out = tmp_path / f"out-{where[0].strip('-')}.csv"
        done = _classify("-s", SCENARIO, "-i", source, "-o", out, "--batch-rows", "16", *where)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert "texts.40: nothing is left of it once cleaned" in lines[0], lines
        assert "markup.csv: row 41)" in lines[0], lines
        with open(out, newline="") as fh:
            assert [int(r["row"]) for r in csv.DictReader(fh)] == list(range(32)), where


def test_against_the_server_the_answers_are_the_in_process_ones(
    served: ServedApp, scored: tuple[Path, Path], tmp_path: Path
) -> None:
    served.wait_for(lambda: served.client.get("/v1/scenarios").json()["scenarios"][0]["version"], 90, "load")
    source, in_process = scored
    small = tmp_path / "small.jsonl"
    with open(source, newline="", encoding="utf-8") as fh:
        reviews = [r["review"] for r in csv.DictReader(fh)][:400]
    small.write_text("".join(json.dumps({"review": t}) + "\n" for t in reviews), encoding="utf-8")
    out = tmp_path / "served.parquet"
    done = _classify(
        "-s", SCENARIO, "-i", small, "-o", out, "--text-column", "review", "--url", served.url, "--json"
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    print(summary)  # the served throughput, for the record (pytest -s)
    assert (summary["rows_scored"], summary["rows_skipped"]) == (400, 0) and summary["rows_per_s"] > 0
    import pyarrow.parquet as pq

    remote = pq.read_table(out).to_pylist()
    local = _rows(in_process)[:400]
    assert [r["row"] for r in remote] == list(range(400))
    assert [r["label"] for r in remote] == [r["label"] for r in local]
    np.testing.assert_allclose([r["score"] for r in remote], [r["score"] for r in local], atol=1e-4)


def test_an_unknown_scenario_is_a_runtime_failure_in_both_modes(
    served: ServedApp, scored: tuple[Path, Path], tmp_path: Path
) -> None:
    source, _ = scored
    for where in (["-r", str(served.repo.root)], ["--url", served.url]):
        done = _classify(
            "-s",
            "no_such_scenario",
            "-i",
            source,
            "-o",
            tmp_path / "x.jsonl",
            "--text-column",
            "review",
            *where,
        )
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "no_such_scenario" in lines[0], lines
