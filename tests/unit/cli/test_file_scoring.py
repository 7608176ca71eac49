"""labelwise.file_scoring: reading CSV / JSONL / Parquet, naming bad rows, keeping the rows before them,
resuming a partial output. The model here is a plain function of the text (the engine is exercised in
tests/integration/test_classify_cli.py); the file handling is what is under test."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from labelwise.errors import InputRowError
from labelwise.file_scoring import OutputFile, Scored, count_rows, read_texts, score_file
from model_repository import UsageError

TEXTS = [f"sentence number {i} " + "word " * (i % 7) for i in range(1000)]


class LengthScorer:
    """Label = word count parity; score = a function of the length. Records what it was asked."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.closed = False

    def score(self, texts: list[str]) -> list[Scored]:
        self.seen.extend(texts)
        return [Scored("even" if len(t.split()) % 2 == 0 else "odd", 1 / (1 + len(t)), 1) for t in texts]

    def close(self) -> None:
        self.closed = True


def _expected(text: str) -> tuple[str, float]:
    return ("even" if len(text.split()) % 2 == 0 else "odd"), 1 / (1 + len(text))


def _write(path: Path, texts: list[str], column: str = "text") -> Path:
    if path.suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", column])
            writer.writerows((i, t) for i, t in enumerate(texts))
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps({"id": i, column: t}) + "\n" for i, t in enumerate(texts)))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"id": list(range(len(texts))), column: texts}), path)
    return path


def _read_output(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    if path.suffix == ".csv":
        with open(path, newline="") as fh:
            return [
                {
                    "row": int(r["row"]),
                    "label": r["label"],
                    "score": float(r["score"]),
                    "version": int(r["version"]),
                }
                for r in csv.DictReader(fh)
            ]
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


@pytest.mark.parametrize("fmt_in", [".csv", ".jsonl", ".parquet"])
@pytest.mark.parametrize("fmt_out", [".csv", ".jsonl", ".parquet"])
def test_every_row_in_input_order_in_every_format(tmp_path: Path, fmt_in: str, fmt_out: str) -> None:
    pytest.importorskip("pyarrow")
    source = _write(tmp_path / f"in{fmt_in}", TEXTS, column="body")
    scorer = LengthScorer()
    summary = score_file(
        source, tmp_path / f"out{fmt_out}", "toy", lambda: scorer, text_column="body", batch_rows=128
    )
    assert scorer.seen == TEXTS and scorer.closed
    assert (summary.rows_scored, summary.rows_skipped) == (1000, 0)
    rows = _read_output(tmp_path / f"out{fmt_out}")
    assert [r["row"] for r in rows] == list(range(1000))
    for text, row in zip(TEXTS, rows, strict=True):
        label, score = _expected(text)
        assert row["label"] == label and row["score"] == pytest.approx(score, rel=1e-5)
    assert count_rows(source) == 1000


@pytest.mark.parametrize("fmt_out", [".jsonl", ".csv", ".parquet"])
def test_a_partial_output_is_resumed_not_redone(tmp_path: Path, fmt_out: str) -> None:
    pytest.importorskip("pyarrow")
    source = _write(tmp_path / "in.jsonl", TEXTS)
    full = tmp_path / f"full{fmt_out}"
    score_file(source, full, "toy", LengthScorer)
    # An interrupted run: 300 rows, then half of row 300 (as a kill mid-write leaves it).
    partial = tmp_path / f"partial{fmt_out}"
    target = partial if fmt_out != ".parquet" else partial.with_name(partial.name + ".partial.jsonl")
    ref = tmp_path / "ref.jsonl" if fmt_out == ".parquet" else full
    if fmt_out == ".parquet":
        score_file(source, ref, "toy", LengthScorer)
    lines = ref.read_text().splitlines(keepends=True)
    header = 1 if fmt_out == ".csv" else 0
    target.write_text("".join(lines[: header + 300]) + lines[header + 300][:7])
    scorer = LengthScorer()
    summary = score_file(source, partial, "toy", lambda: scorer, batch_rows=64)
    assert (summary.rows_skipped, summary.rows_scored) == (300, 700)
    assert scorer.seen == TEXTS[300:]
    assert _read_output(partial) == _read_output(full)
    again = LengthScorer()
    assert score_file(source, partial, "toy", lambda: again).rows_scored == 0 and again.seen == []


def test_an_output_that_is_not_ours_is_refused_unless_overwritten(tmp_path: Path) -> None:
    source = _write(tmp_path / "in.jsonl", TEXTS[:10])
    out = tmp_path / "out.jsonl"
    out.write_text('{"row": 0, "label": "a"}\n{"row": 5, "label": "b"}\n')
    with pytest.raises(UsageError, match=r"out\.jsonl exists and is not a partial output.*--overwrite"):
        score_file(source, out, "toy", LengthScorer)
    assert score_file(source, out, "toy", LengthScorer, overwrite=True).rows_scored == 10
    assert [r["row"] for r in _read_output(out)] == list(range(10))


class StopAfter(LengthScorer):
    """Scores `chunks` chunks, then fails as a crash or Ctrl-C would."""

    def __init__(self, chunks: int) -> None:
        super().__init__()
        self.left = chunks

    def score(self, texts: list[str]) -> list[Scored]:
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        return super().score(texts)


@pytest.mark.parametrize("fmt_out", [".jsonl", ".parquet"])
def test_ctrl_c_before_the_first_rows_are_written_says_the_output_was_left_as_it_was(
    tmp_path: Path, fmt_out: str
) -> None:
    pytest.importorskip("pyarrow")
    source = _write(tmp_path / "in.jsonl", TEXTS)
    out = tmp_path / f"out{fmt_out}"
    with pytest.raises(KeyboardInterrupt) as caught:
        score_file(source, out, "toy", lambda: StopAfter(0), batch_rows=100)
    assert str(caught.value) == f"before any row was written; {out} was left as it was"
    assert not out.exists()
    with pytest.raises(KeyboardInterrupt):
        score_file(source, out, "toy", lambda: StopAfter(2), batch_rows=100)
    # Parquet rows are staged beside the output until they are all there.
    where = out if fmt_out == ".jsonl" else tmp_path / "out.parquet.partial.jsonl"
    before = where.read_bytes()
    with pytest.raises(KeyboardInterrupt) as caught:
        score_file(source, out, "toy", lambda: StopAfter(0), batch_rows=100)
    assert str(caught.value) == (
        f"before any row was written; {where} was left as it was, holding the 200 rows scored before; "
        "run the same command again to resume from there"
    )
    assert where.read_bytes() == before


@pytest.mark.parametrize("fmt_out", [".jsonl", ".parquet"])
def test_a_partial_output_resumes_only_for_the_same_scenario_input_and_column(
    tmp_path: Path, fmt_out: str
) -> None:
    pytest.importorskip("pyarrow")
    source = _write(tmp_path / "in.jsonl", TEXTS)
    out = tmp_path / f"out{fmt_out}"
    with pytest.raises(KeyboardInterrupt):
        score_file(source, out, "review_sentiment", lambda: StopAfter(2), batch_rows=100)
    # Another scenario, another column, or a changed input: rows of two runs would sit in one file.
    with pytest.raises(UsageError, match=r"holds 200 rows of another run \(scenario 'review_sentiment'; "
                                         r"this run: scenario 'spam'\).*--overwrite"):  # fmt: skip
        score_file(source, out, "spam", LengthScorer)
    renamed = _write(tmp_path / "in2.jsonl", TEXTS, column="body")
    with pytest.raises(UsageError, match=r"input_name 'in.jsonl'.*text_column 'text'"):
        score_file(renamed, out, "review_sentiment", LengthScorer, text_column="body")
    # The same run resumes where it stopped; a finished output of it is done, and another scenario
    # on the finished output is refused too (not "nothing to score").
    scorer = LengthScorer()
    summary = score_file(source, out, "review_sentiment", lambda: scorer, batch_rows=100)
    assert (summary.rows_skipped, summary.rows_scored) == (200, 800) and scorer.seen == TEXTS[200:]
    assert score_file(source, out, "review_sentiment", LengthScorer).rows_scored == 0
    with pytest.raises(UsageError, match=r"holds 1000 rows of another run"):
        score_file(source, out, "spam", LengthScorer)
    # --overwrite starts the other run, and records it.
    assert score_file(source, out, "spam", LengthScorer, overwrite=True).rows_scored == 1000
    assert score_file(source, out, "spam", LengthScorer).rows_scored == 0


def _bad_row_case(tmp_path: Path, kind: str) -> tuple[Path, str]:
    good = "".join(f"{t},x\n" for t in TEXTS[:5])
    if kind == "csv-utf8":
        path = tmp_path / "in.csv"
        path.write_bytes(b"text,other\n" + good.encode() + b"caf\xe9 au lait,x\n" + b"after,x\n")
        return path, r"in\.csv: row 6 \(line 7\): invalid UTF-8 \(byte e9 at column 4\)"
    if kind == "csv-empty-line":
        path = tmp_path / "in.csv"
        path.write_text("text,other\n" + good + "\nafter,x\n")
        return path, r"in\.csv: row 6 \(line 7\): empty line"
    if kind == "csv-unquoted-comma":  # the text was cut at the comma ("I liked it"), saying nothing
        path = tmp_path / "in.csv"
        path.write_text("text,other\n" + good + "I liked it, a lot,x\n")
        return path, r"in\.csv: row 6 \(line 7\): 3 fields, the header names 2: a field holding a comma must"
    if kind == "csv-space-before-quote":  # quoted, but after ", ": it was told to quote the field
        path = tmp_path / "in.csv"
        path.write_text("text,other\n" + good + 'fine, "x, y"\n')
        return path, r"in\.csv: row 6 \(line 7\): 3 fields, the header names 2: a quote after a space opens"
    if kind == "csv-empty-text":
        path = tmp_path / "in.csv"
        path.write_text("text,other\n" + good + ",x\n")
        return path, r"in\.csv: row 6 \(line 7\): empty text in column 'text'"
    lines = [json.dumps({"text": t}) + "\n" for t in TEXTS[:5]]
    path = tmp_path / "in.jsonl"
    if kind == "jsonl-missing-field":
        path.write_text("".join(lines) + '{"body": "wrong field"}\n')
        return path, r"in\.jsonl: row 6 \(line 6\): no 'text' field \(fields: body\)"
    if kind == "jsonl-empty-line":
        path.write_text("".join(lines) + "\n" + lines[0])
        return path, r"in\.jsonl: row 6 \(line 6\): empty line"
    if kind == "jsonl-repeated-field":  # JSON keeps the last one: "b" was scored, saying nothing
        # (a value "text", or the key in a nested object, is no repeat: row 5's check)
        lines[4] = '{"label": "text", "meta": {"text": 1}, "text": "fine"}\n'
        path.write_text("".join(lines) + '{"text": "a", "text": "b"}\n')
        return path, r"in\.jsonl: row 6 \(line 6\): the field 'text' appears 2 times; keep one"
    if kind == "jsonl-deep":  # json's RecursionError was a traceback
        path.write_text("".join(lines) + '{"text": "a", "meta": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
        return path, r"in\.jsonl: row 6 \(line 6\): JSON nested too deeply to read"
    if kind == "jsonl-long-number":  # int()'s ValueError was a traceback
        path.write_text("".join(lines) + '{"text": "a", "id": ' + "9" * 5000 + "}\n")
        return path, r"in\.jsonl: row 6 \(line 6\): a JSON number of more than 4300 digits, too long to read"
    path.write_bytes("".join(lines).encode() + b'{"text": "\xff"}\n')
    return path, r"in\.jsonl: row 6 \(line 6\): invalid UTF-8 \(byte ff"


@pytest.mark.parametrize(
    "kind",
    [
        "csv-utf8",
        "csv-empty-line",
        "csv-empty-text",
        "csv-unquoted-comma",
        "csv-space-before-quote",
        "jsonl-missing-field",
        "jsonl-empty-line",
        "jsonl-repeated-field",
        "jsonl-utf8",
        "jsonl-deep",
        "jsonl-long-number",
    ],
)
def test_a_bad_row_is_named_and_the_rows_before_it_are_kept(tmp_path: Path, kind: str) -> None:
    source, message = _bad_row_case(tmp_path, kind)
    out = tmp_path / "out.jsonl"
    with pytest.raises(InputRowError, match=message) as caught:
        score_file(source, out, "toy", LengthScorer, batch_rows=2)
    assert caught.value.row == 6 and caught.value.exit_code == 2
    assert "the 5 row(s) before it are in" in str(caught.value)
    assert [r["row"] for r in _read_output(out)] == [0, 1, 2, 3, 4]


def test_a_bad_row_in_an_overwrite_run_says_to_resume_without_overwrite(tmp_path: Path) -> None:
    """'Fix the row and run again to resume': run again with --overwrite, the rows kept were emptied again."""
    source, message = _bad_row_case(tmp_path, "csv-empty-text")
    out = tmp_path / "out.jsonl"
    out.write_text("an old output\n")
    with pytest.raises(InputRowError, match=message) as caught:
        score_file(source, out, "toy", LengthScorer, batch_rows=2, overwrite=True)
    assert str(caught.value).endswith(
        f"the 5 row(s) before it are in {out}; fix the row and run again without --overwrite to resume"
    )
    assert [r["row"] for r in _read_output(out)] == [0, 1, 2, 3, 4]


def test_parquet_bad_rows_are_named(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "in.parquet"
    values = [t.encode() for t in TEXTS[:3]] + [b"\xc3\x28 broken"]
    pq.write_table(pa.table({"text": pa.array(values, type=pa.binary())}), path)
    with pytest.raises(InputRowError, match=r"in\.parquet: row 4: invalid UTF-8 in column 'text'"):
        list(read_texts(path))
    pq.write_table(pa.table({"text": ["a", None]}), path)
    with pytest.raises(InputRowError, match=r"row 2: null in column 'text'"):
        list(read_texts(path))


def test_a_missing_column_names_the_columns_there_are(tmp_path: Path) -> None:
    source = _write(tmp_path / "in.csv", TEXTS[:3], column="body")
    with pytest.raises(
        UsageError, match=r"no 'text' column in the header \(line 1: id, body\).*--text-column"
    ):
        score_file(source, tmp_path / "out.jsonl", "toy", LengthScorer)
    assert not (tmp_path / "out.jsonl").exists()  # refused before any output is made
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(UsageError, match=r"broken\.parquet: not a readable Parquet file"):
        score_file(broken, tmp_path / "out.csv", "toy", LengthScorer)
    assert not (tmp_path / "out.csv").exists()


def test_unknown_extensions_and_missing_files_are_usage_errors(tmp_path: Path) -> None:
    source = _write(tmp_path / "in.jsonl", TEXTS[:3])
    with pytest.raises(UsageError, match=r"--output .*out\.xlsx: unknown extension '\.xlsx'"):
        score_file(source, tmp_path / "out.xlsx", "toy", LengthScorer)
    with pytest.raises(UsageError, match=r"--input .*absent\.csv does not exist"):
        score_file(tmp_path / "absent.csv", tmp_path / "out.jsonl", "toy", LengthScorer)
    # a folder was "unknown extension ''" as --output, and "does not exist" when named like a file
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(UsageError, match=r"--input .*folder\.csv is a folder; name a file \(\.csv, "):
        score_file(tmp_path / "folder.csv", tmp_path / "out.jsonl", "toy", LengthScorer)
    with pytest.raises(UsageError, match=r"--output .*folder\.csv is a folder; name a file"):
        score_file(source, tmp_path / "folder.csv", "toy", LengthScorer)
    with pytest.raises(UsageError, match=f"--output {re.escape(str(tmp_path))} is a folder; name a file"):
        score_file(source, tmp_path, "toy", LengthScorer)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_read_texts_names_a_symlink_loop_rather_than_a_missing_file(tmp_path: Path, suffix: str) -> None:
    """read_texts called on its own (not through score_file, which refuses a loop first) said such a path
    'does not exist': is_file() and exists() are False on it."""
    a, b = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    a.symlink_to(b.name)
    b.symlink_to(a.name)
    with pytest.raises(UsageError) as caught:
        read_texts(a)
    assert str(caught.value) == (
        f"--input {a}: its symlinks loop (too many levels of symbolic links); name the file itself"
    )


def test_an_unusable_output_is_a_usage_error_not_a_traceback(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    source = _write(tmp_path / "in.jsonl", TEXTS[:3])
    junk = tmp_path / "junk.jsonl"
    junk.write_bytes(b"\xff\xfe{}\n")
    fake_parquet = tmp_path / "junk.parquet"
    fake_parquet.write_bytes(b"not parquet")
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    for out, fragment in (
        (junk, "is not a partial output"),
        (fake_parquet, "not a readable Parquet file"),
        (blocked / "out.jsonl", "cannot write there"),
    ):
        with pytest.raises(UsageError, match=fragment):
            score_file(source, out, "toy", LengthScorer)
    assert score_file(source, junk, "toy", LengthScorer, overwrite=True).rows_scored == 3


class FailingScorer:
    """A scorer that cannot be made: a misspelt scenario, a server that is not there."""

    def __init__(self) -> None:
        raise UsageError("cannot load scenario 'typo'")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("precious.csv", b"name,amount\nalice,10\nbob,20"),
        ("precious.jsonl", b'{"a": 1}\n{"a": 2}'),
        ("short.csv", b"name,am"),
        ("rows.jsonl", b'{"row": 0, "label": "a"}\n{"row": 7}\n'),
    ],
)
def test_a_refused_output_is_left_byte_for_byte_as_it_was(tmp_path: Path, name: str, content: bytes) -> None:
    source = _write(tmp_path / "in.jsonl", TEXTS[:3])
    out = tmp_path / name
    out.write_bytes(content)
    with pytest.raises(UsageError, match="is not a partial output"):
        score_file(source, out, "toy", LengthScorer)
    assert out.read_bytes() == content


@pytest.mark.parametrize("fmt_out", [".csv", ".jsonl", ".parquet"])
def test_a_scorer_that_cannot_be_made_leaves_the_old_output_as_it_was(tmp_path: Path, fmt_out: str) -> None:
    pytest.importorskip("pyarrow")
    source = _write(tmp_path / "in.jsonl", TEXTS[:20])
    out = tmp_path / f"out{fmt_out}"
    score_file(source, out, "toy", LengthScorer)
    before = out.read_bytes()
    _write(source, TEXTS[:25])  # more rows: a resume (csv, jsonl) has some to score
    for overwrite in (True, False) if fmt_out != ".parquet" else (True,):
        with pytest.raises(UsageError, match="cannot load"):
            score_file(source, out, "toy", FailingScorer, overwrite=overwrite)
        assert out.read_bytes() == before
        # the output, and the record of the run that wrote it (for a later resume)
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            f".out{fmt_out}.classify.json",
            "in.jsonl",
            f"out{fmt_out}",
        ]
    fresh = tmp_path / f"fresh{fmt_out}"
    with pytest.raises(UsageError, match="cannot load"):
        score_file(source, fresh, "toy", FailingScorer)
    assert not fresh.exists()  # no empty output left behind
    assert not fresh.with_name(fresh.name + ".partial.jsonl").exists()
    assert score_file(source, out, "toy", LengthScorer, overwrite=True).rows_scored == 25
    assert [r["row"] for r in _read_output(out)] == list(range(25))


def test_an_input_without_rows_still_gives_an_output(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("text\n")
    out = tmp_path / "out.csv"
    assert score_file(source, out, "toy", FailingScorer).rows_scored == 0
    assert out.read_bytes() == b"row,label,score,version\r\n"


def test_csv_fields_longer_than_csvs_default_limit_are_read(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    long_text = "word " * 40_000  # 200000 characters, over csv's 131072
    source.write_text(f'text\nshort\n"{long_text}"\n')
    assert list(read_texts(source)) == ["short", long_text]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'text\nhello\n"unclosed\nmore\nrows\n',
            r"row 2 \(line 3\): a quoted field opened on line 3 is never closed",
        ),
        (b'text\nhello\n"ab"c\n', r"row 2 \(line 3\): not valid CSV"),
    ],
)
def test_broken_csv_quoting_is_a_named_row_not_a_traceback(
    tmp_path: Path, content: bytes, message: str
) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(content)
    out = tmp_path / "out.jsonl"
    with pytest.raises(InputRowError, match=message) as caught:
        score_file(source, out, "toy", LengthScorer)
    assert caught.value.exit_code == 2
    assert [r["row"] for r in _read_output(out)] == [0]


def test_empty_fields_past_the_header_are_no_bad_row(tmp_path: Path) -> None:
    """A trailing comma (a spreadsheet's export) leaves nothing of the text out: read as before."""
    source = tmp_path / "in.csv"
    source.write_text("text,other\nhello,x,\nworld,y, ,\n")
    out = tmp_path / "out.jsonl"
    assert score_file(source, out, "toy", LengthScorer).rows_scored == 2


def test_a_text_column_named_twice_is_refused(tmp_path: Path) -> None:
    """The first of the two was scored and the other left out, saying nothing."""
    source = tmp_path / "in.csv"
    source.write_text("text,text\nfirst,second\n")
    out = tmp_path / "out.jsonl"
    with pytest.raises(UsageError, match=r"in\.csv: the header \(line 1\) names 'text' 2 times; rename"):
        score_file(source, out, "toy", LengthScorer)
    assert not out.exists()


def test_a_parquet_text_column_named_twice_is_refused_not_a_traceback(tmp_path: Path) -> None:
    """Arrow keeps both columns; looking the name up raised KeyError ('Column text does not exist')."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    source = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"])], names=["text", "text"]), source)
    out = tmp_path / "out.jsonl"
    with pytest.raises(UsageError, match=r"in\.parquet: its schema names 'text' 2 times; rename"):
        score_file(source, out, "toy", LengthScorer)
    assert not out.exists()


def test_cr_only_line_endings_are_a_usage_error(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(b"text\rhello\rworld\r")
    with pytest.raises(UsageError, match=r"in\.csv: the header \(line 1\): a carriage return"):
        score_file(source, tmp_path / "out.jsonl", "toy", LengthScorer)


def test_a_finished_parquet_output_of_a_csv_with_multiline_fields_is_done(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    source = _write(tmp_path / "in.csv", ["one\nline two", "three", "four\n\nfive"])
    out = tmp_path / "out.parquet"
    assert score_file(source, out, "toy", LengthScorer).rows_scored == 3
    again = LengthScorer()
    summary = score_file(source, out, "toy", lambda: again)
    assert (summary.rows_scored, summary.rows_skipped, again.seen) == (0, 3, [])


@pytest.mark.parametrize(
    ("name", "content"),
    [("in.jsonl", '{"text": "a"}\n{"text": "bb"}\n\n\n'), ("in.csv", "text\r\na\r\nbb\r\n\r\n")],
)
def test_empty_lines_at_the_end_of_the_input_are_its_end(tmp_path: Path, name: str, content: str) -> None:
    source = tmp_path / name
    source.write_text(content, newline="")
    summary = score_file(source, tmp_path / "out.jsonl", "toy", LengthScorer)
    assert summary.rows_scored == 2
    # an empty line with rows after it is still refused, by its line
    middle = '{"text": "a"}\n\n{"text": "ccc"}\n' if name.endswith(".jsonl") else "text\na\n\nccc\n"
    source.write_text(middle, newline="")
    with pytest.raises(InputRowError, match="empty line"):
        score_file(source, tmp_path / "again.jsonl", "toy", LengthScorer)


def test_a_parquet_output_is_written_a_row_group_at_a_time(tmp_path: Path, monkeypatch) -> None:
    """The staged rows were read into lists whole before the one write: some 380 MB a million rows. Read
    and written a row group at a time, memory no longer grows with the file; the rows are the same."""
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    import labelwise.file_scoring as file_scoring

    monkeypatch.setattr(file_scoring, "_PARQUET_GROUP_ROWS", 64)
    source = _write(tmp_path / "in.jsonl", TEXTS[:300])
    out = tmp_path / "out.parquet"
    score_file(source, out, "toy", LengthScorer, batch_rows=1000)
    assert pq.ParquetFile(out).metadata.num_row_groups == 5  # 300 rows, 64 a group
    assert [r["row"] for r in _read_output(out)] == list(range(300))
    _write(source, TEXTS[:700])  # grown: the finished rows go back to the staging file, and out again
    assert score_file(source, out, "toy", LengthScorer).rows_scored == 400
    assert pq.ParquetFile(out).metadata.num_row_groups == 11
    rows = _read_output(out)
    assert [r["row"] for r in rows] == list(range(700))
    assert [(r["label"], r["score"]) for r in rows] == [
        (label, pytest.approx(score, rel=1e-5)) for label, score in map(_expected, TEXTS[:700])
    ]
    empty = tmp_path / "empty.parquet"  # an input without rows still gives an output, with the columns
    score_file(_write(tmp_path / "none.jsonl", []), empty, "toy", LengthScorer)
    assert pq.read_table(empty).column_names == ["row", "label", "score", "version"]


@pytest.mark.parametrize("fmt_out", [".jsonl", ".csv", ".parquet"])
def test_an_existing_output_is_checked_a_line_at_a_time_not_read_whole(tmp_path: Path, fmt_out: str) -> None:
    """A resume, or a finished output run again, read the whole output into memory to count its rows:
    the bytes, their text and its lines at once (some 330 MB for a million JSONL rows). Read a line at a
    time, it holds far less than the file, and still cuts a half-written last row."""
    import tracemalloc

    class TwoLineLabel(LengthScorer):  # a CSV record of two lines: its last line break is inside a label
        def score(self, texts: list[str]) -> list[Scored]:
            return [Scored(f"two\nlines {len(t) % 3}", 0.5, 1) for t in texts]

    pytest.importorskip("pyarrow")
    texts = TEXTS * 20
    source = _write(tmp_path / "in.jsonl", texts)
    out = tmp_path / f"out{fmt_out}"
    score_file(source, out, "toy", TwoLineLabel, batch_rows=5000)
    _write(source, texts[:-1])  # the rows the output holds once its half-written last row is cut
    staged = out if fmt_out != ".parquet" else out.with_name(out.name + ".partial.jsonl")
    if fmt_out == ".parquet":  # its rows back in the staging file, as for an input that grew
        OutputFile(out).reopen_complete()
    data = staged.read_bytes()
    staged.write_bytes(data[: data.rindex(b"\n", 0, len(data) - 1) + 6])  # the last row half-written
    tracemalloc.start()
    try:
        found = OutputFile(out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found.done == len(texts) - 1
    assert peak < staged.stat().st_size / 10, (
        f"{peak} bytes held to read a {staged.stat().st_size}-byte output"
    )
    summary = score_file(source, out, "toy", TwoLineLabel)
    assert (summary.rows_skipped, summary.rows_scored) == (len(texts) - 1, 0)
    assert [r["row"] for r in _read_output(out)] == list(range(len(texts) - 1))


def _foreign_without_an_end(path: Path, start: bytes) -> None:
    """`start`, then some 40 MB of CSV rows that never end what it opened."""
    block = b"".join(b"%d,positive,0.5,1\r\n" % i for i in range(1, 10_000))
    path.write_bytes(start + block * (40_000_000 // len(block)))


@pytest.mark.parametrize(
    ("name", "start", "why"),
    [
        (
            "out.csv",
            b'row,label,score,version\r\n0,"never closed\r\n',
            r"the record from line 2 runs past 1 MiB",
        ),
        ("out.csv", b'"row,label,score,version\r\n', r"the record from line 1 runs past 1 MiB"),
        ("out.jsonl", b'{"data": "' + b"x" * 40_000_000, r"line 1 runs past 1 MiB"),
    ],
    ids=["csv-row-quote-left-open", "csv-header-quote-left-open", "jsonl-one-long-line"],
)
def test_a_foreign_output_with_no_end_to_a_record_is_refused_without_reading_it_whole(
    tmp_path: Path, name: str, start: bytes, why: str
) -> None:
    """An unclosed quote early in a CSV that is not ours swallowed the rest of the file into one field (and
    its lines were kept for the cut check) before it was refused, holding some 8 times the file. No row
    this command writes runs past 1 MiB, so the check stops there."""
    import tracemalloc

    list(read_texts(_write(tmp_path / "in.csv", TEXTS[:3])))  # a CSV read lifts csv's own field limit
    out = tmp_path / name
    _foreign_without_an_end(out, start)
    before = out.stat().st_size
    tracemalloc.start()
    try:
        with pytest.raises(UsageError) as refused:
            OutputFile(out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert re.search(
        rf"--output .*{re.escape(name)} exists and is not a partial output of `labelwise classify` \({why}",
        str(refused.value),
    ), str(refused.value)
    assert "no row this command writes is that long" in str(refused.value)
    assert peak < before / 4, f"{peak} bytes held to refuse a {before}-byte output"
    assert out.stat().st_size == before


@pytest.mark.parametrize(("extra", "done"), [(0, 2), (1, None)], ids=["1-MiB", "1-MiB-and-a-byte"])
def test_a_csv_output_row_of_up_to_1_mib_over_many_lines_is_still_ours(
    tmp_path: Path, extra: int, done: int | None
) -> None:
    header, last = b"row,label,score,version\r\n", b"1,short,0.5,1\r\n"
    start, end = b'0,"', b'",0.5,1\r\n'
    label = (b"a line of a long label\n" * 2**16)[: 2**20 + extra - len(start) - len(end)]
    out = tmp_path / "out.csv"
    out.write_bytes(header + start + label + end + last)
    if done is not None:
        assert OutputFile(out).done == done
    else:
        ends = 2 + label.count(b"\n")  # the record's last line, whose ",0.5,1" is a byte too many
        with pytest.raises(UsageError, match=rf"the record from line 2 runs past 1 MiB by line {ends} "):
            OutputFile(out)


def test_a_finished_parquet_output_resumes_when_the_input_has_grown(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    source = _write(tmp_path / "in.csv", TEXTS[:20])
    out = tmp_path / "out.parquet"
    score_file(source, out, "toy", LengthScorer)
    _write(source, TEXTS[:200])
    scorer = LengthScorer()
    summary = score_file(source, out, "toy", lambda: scorer)
    assert (summary.rows_skipped, summary.rows_scored) == (20, 180) and scorer.seen == TEXTS[20:200]
    assert [r["row"] for r in _read_output(out)] == list(range(200))
    assert not (tmp_path / "out.parquet.partial.jsonl").exists()


class OddLabelScorer(LengthScorer):
    def score(self, texts: list[str]) -> list[Scored]:
        return [Scored("line\u2028sep\x85", 0.5, 1) for _ in texts]


def test_a_jsonl_output_whose_labels_hold_line_separators_resumes(tmp_path: Path) -> None:
    source = _write(tmp_path / "in.jsonl", TEXTS[:10])
    out = tmp_path / "out.jsonl"
    score_file(source, out, "toy", OddLabelScorer)
    _write(source, TEXTS[:15])
    summary = score_file(source, out, "toy", OddLabelScorer)
    assert (summary.rows_skipped, summary.rows_scored) == (10, 5)


@pytest.mark.parametrize("rows", [3, 2])
def test_a_parquet_output_of_other_columns_is_not_taken_for_a_finished_one(tmp_path: Path, rows: int) -> None:
    """Only its row count was read: a data file of as many rows passed as finished (nothing scored, exit
    0), one of fewer raised KeyError 'row' with a traceback."""
    source = _write(tmp_path / "in.parquet", TEXTS[:3])
    other = _write(tmp_path / "other.parquet", TEXTS[:rows])
    with pytest.raises(UsageError, match=r"its columns are \['id', 'text'\], not \['row', 'label', 'score'"):
        score_file(source, other, "toy", LengthScorer)
    assert not list(tmp_path.glob("other.parquet.*"))  # no staging file left beside it


def test_a_bad_row_in_the_part_already_scored_says_the_input_was_edited(tmp_path: Path) -> None:
    source = _write(tmp_path / "in.jsonl", TEXTS[:10])
    out = tmp_path / "out.jsonl"
    score_file(source, out, "toy", LengthScorer)
    lines = source.read_text().splitlines()
    lines[3] = json.dumps({"id": 3, "text": ""})
    source.write_text("\n".join([*lines, json.dumps({"id": 10, "text": "one more"})]) + "\n")
    with pytest.raises(InputRowError) as caught:
        score_file(source, out, "toy", LengthScorer)
    message = str(caught.value)
    assert "already holds a score of row 4: the input was edited in the part already scored" in message
    assert "--overwrite" in message and "row(s) before it" not in message


@pytest.mark.parametrize("fmt_out", [".jsonl", ".csv", ".parquet"])
def test_a_resumed_output_whose_input_was_edited_in_the_scored_part_is_refused(
    tmp_path: Path, fmt_out: str
) -> None:
    """The rows already scored are checked against the texts they were scored from: an edit there used
    to resume silently, the old scores kept beside texts they are not of."""
    pytest.importorskip("pyarrow")
    source = _write(tmp_path / "in.jsonl", TEXTS[:300])
    out = tmp_path / f"out{fmt_out}"
    with pytest.raises(KeyboardInterrupt):
        score_file(source, out, "toy", lambda: StopAfter(2), batch_rows=100)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(("out", ".out"))}
    edited = [*TEXTS[:300]]
    edited[150] = "another text altogether"
    _write(source, edited)
    with pytest.raises(UsageError, match=r"holds scores of the input's first 200 rows, but those rows hold "
                                         r"other texts now.*--overwrite"):  # fmt: skip
        score_file(source, out, "toy", LengthScorer)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith(("out", ".out"))}
    assert after == before  # refused before anything was written
    # An edit after the scored part is the input's own business: it resumes and scores the new texts.
    edited[150], edited[250] = TEXTS[150], "a later edit"
    _write(source, edited)
    scorer = LengthScorer()
    summary = score_file(source, out, "toy", lambda: scorer, batch_rows=100)
    assert (summary.rows_skipped, summary.rows_scored) == (200, 100) and scorer.seen == edited[200:]
    # The finished output is checked too: an edit anywhere in it is refused, not "nothing to score".
    edited[20] = "edited once finished"
    _write(source, edited)
    with pytest.raises(UsageError, match=r"first 300 rows, but those rows hold other texts"):
        score_file(source, out, "toy", LengthScorer)
    assert score_file(source, out, "toy", LengthScorer, overwrite=True).rows_scored == 300
    assert score_file(source, out, "toy", LengthScorer).rows_scored == 0


@pytest.mark.parametrize("fmt_out", [".jsonl", ".csv", ".parquet"])
def test_a_resumed_output_whose_input_was_cut_names_the_output(tmp_path: Path, fmt_out: str) -> None:
    """An input cut below the rows its output holds said only "the output already holds 50 rows but the
    input has only 30": no file named, no way on (an edit in the scored part says both). A finished
    Parquet output was called "not a partial output of `labelwise classify`", which it is."""
    if fmt_out == ".parquet":
        pytest.importorskip("pyarrow")
    source = _write(tmp_path / "in.jsonl", TEXTS[:50])
    out = tmp_path / f"out{fmt_out}"
    score_file(source, out, "toy", LengthScorer, batch_rows=10)
    _write(source, TEXTS[:30])
    said = f"--output {out} holds scores of 50 rows, but the input has only 30 now (it was cut since); pass"
    with pytest.raises(UsageError, match=re.escape(said) + " --overwrite"):
        score_file(source, out, "toy", LengthScorer, batch_rows=10)


def test_a_csv_output_cut_inside_a_label_with_a_line_break_resumes_from_the_last_whole_row(
    tmp_path: Path,
) -> None:
    """A kill mid-write can stop inside a quoted label that holds a line break; the line break was taken
    for the end of a whole row, so that half row was counted and the next rows appended to it."""

    class BrokenLabel(LengthScorer):
        def score(self, texts: list[str]) -> list[Scored]:
            return [Scored(f"two\nlines {len(t) % 3}", 0.5, 1) for t in texts]

    source = _write(tmp_path / "in.jsonl", TEXTS[:10])
    full = tmp_path / "full.csv"
    score_file(source, full, "toy", BrokenLabel)
    data = full.read_bytes()
    cut = data.index(b'5,"two\n') + len(b'5,"two\n')  # row 5's label cut after its line break
    partial = tmp_path / "partial.csv"
    partial.write_bytes(data[:cut])
    summary = score_file(source, partial, "toy", BrokenLabel)
    assert (summary.rows_skipped, summary.rows_scored) == (5, 5)
    assert partial.read_bytes() == data


def _cut_output(out: Path, rows: int) -> None:
    """Keep the output's first `rows` rows, as a kill after the run record's write and before the rows'
    (or a disk that lost what was not yet written) leaves it."""
    lines = out.read_text().splitlines(keepends=True)
    header = 1 if out.suffix == ".csv" else 0
    out.write_text("".join(lines[: header + rows]))


@pytest.mark.parametrize("fmt_out", [".jsonl", ".csv"])
def test_an_edit_in_a_chunk_whose_record_was_written_but_not_its_rows_is_still_caught(
    tmp_path: Path, fmt_out: str
) -> None:
    """The digest was recorded after a chunk's rows: a kill between the two left the last chunk unchecked,
    and the resume's record then vouched for the edited text. It is recorded first now, before and after
    the chunk, and the resume checks the larger checkpoint the output holds."""
    source = _write(tmp_path / "in.jsonl", TEXTS[:300])
    out = tmp_path / f"out{fmt_out}"
    score_file(source, out, "toy", LengthScorer, batch_rows=100)
    record = json.loads((tmp_path / f".out{fmt_out}.classify.json").read_text())
    assert [rows for rows, _sha in record["scored_texts_sha256"]] == [200, 300]
    _cut_output(out, 200)  # the last chunk's record is there, its rows are not
    edited = [*TEXTS[:300]]
    edited[150] = "edited in the last chunk the output holds"
    _write(source, edited)
    with pytest.raises(UsageError, match=r"first 200 rows, but those rows hold other texts"):
        score_file(source, out, "toy", LengthScorer, batch_rows=100)
    edited[150], edited[250] = TEXTS[150], "edited past what the output holds"
    _write(source, edited)
    scorer = LengthScorer()
    summary = score_file(source, out, "toy", lambda: scorer, batch_rows=100)
    assert (summary.rows_skipped, summary.rows_scored) == (200, 100) and scorer.seen == edited[200:]


def test_an_output_holding_fewer_rows_than_its_record_says_were_written_is_refused(tmp_path: Path) -> None:
    """The check was dropped when the record was past the output (cut by hand, rows lost on disk)."""
    source = _write(tmp_path / "in.jsonl", TEXTS[:300])
    out = tmp_path / "out.jsonl"
    score_file(source, out, "toy", LengthScorer, batch_rows=100)
    _cut_output(out, 150)
    with pytest.raises(
        UsageError, match=r"holds 150 rows, fewer than the 200 its run record says were written"
    ):
        score_file(source, out, "toy", LengthScorer, batch_rows=100)
    assert score_file(source, out, "toy", LengthScorer, overwrite=True).rows_scored == 300


@pytest.mark.parametrize(
    ("row", "broken"), [(3, '3,"odd,0.5,1\r\n'), (9, '9,"odd"x,0.5,1\r\n')], ids=["middle", "last"]
)
def test_a_csv_output_with_a_broken_row_is_refused_not_cut_there(
    tmp_path: Path, row: int, broken: str
) -> None:
    """Any quoting error that ran to the end was taken for a kill's cut: the rows after an unclosed quote
    were dropped and scored again, and a last row with bad quoting silently rescored."""
    source = _write(tmp_path / "in.jsonl", TEXTS[:10])
    out = tmp_path / "out.csv"
    score_file(source, out, "toy", LengthScorer)
    lines = out.read_text().splitlines(keepends=True)
    lines[1 + row] = broken
    out.write_text("".join(lines))
    before = out.read_bytes()
    with pytest.raises(UsageError, match=r"out\.csv exists and is not a partial output"):
        score_file(source, out, "toy", LengthScorer)
    assert out.read_bytes() == before


def test_a_finished_parquet_output_of_a_parquet_input_that_grew_with_a_bad_row_keeps_the_new_rows(
    tmp_path: Path,
) -> None:
    """The digest check read the whole grown input first, so a bad new row failed before any new row was
    scored, without saying where the rows before it went."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": TEXTS[:30]}), source)
    out = tmp_path / "out.parquet"
    score_file(source, out, "toy", LengthScorer)
    pq.write_table(pa.table({"text": [*TEXTS[:35], None, *TEXTS[36:40]]}), source)
    with pytest.raises(InputRowError, match=r"row 36: .*the 35 row\(s\) before it are in"):
        score_file(source, out, "toy", LengthScorer)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_utf16_file_is_named_as_one(tmp_path: Path, suffix: str) -> None:
    """Saved as "Unicode" by a Windows tool: the byte order mark says it is UTF-16, and so does the line."""
    path = tmp_path / f"in{suffix}"
    body = "text\nhello\n" if suffix == ".csv" else '{"text": "hello"}\n'
    path.write_bytes(body.encode("utf-16"))
    with pytest.raises(
        InputRowError, match=r"row 1 \(line 1\): invalid UTF-8 \(byte ff .*UTF-16.*save it as UTF-8"
    ):
        list(read_texts(path))


class _CtrlCWhileWriting(list):
    """Answers whose iteration (the output writing them) is stopped by Ctrl-C after `rows` of them."""

    def __init__(self, answers: list[Scored], rows: int) -> None:
        super().__init__(answers)
        self.rows = rows

    def __iter__(self) -> Iterator[Scored]:
        yield from self[: self.rows]
        raise KeyboardInterrupt  # what the SIGINT handler raises, here at a known place


class CtrlCWhileWritingScorer(LengthScorer):
    rows = 0

    def score(self, texts: list[str]) -> list[Scored]:
        return _CtrlCWhileWriting(super().score(texts), self.rows)


@pytest.mark.parametrize("rows", [0, 2])
@pytest.mark.parametrize("fmt_out", [".csv", ".jsonl", ".parquet"])
def test_ctrl_c_while_overwrite_writes_its_first_rows_says_what_the_output_holds(
    tmp_path: Path, fmt_out: str, rows: int
) -> None:
    """The message said the output 'was left as it was' (no progress reported yet) although --overwrite had
    already emptied it, or written rows into it."""
    pytest.importorskip("pyarrow")
    source = _write(tmp_path / "in.jsonl", TEXTS[:20])
    out = tmp_path / f"out{fmt_out}"
    score_file(source, out, "toy", LengthScorer)
    before = out.read_bytes()
    scorer = CtrlCWhileWritingScorer()
    scorer.rows = rows
    with pytest.raises(KeyboardInterrupt) as caught:
        score_file(source, out, "toy", lambda: scorer, batch_rows=4, overwrite=True)
    # Parquet rows are staged beside the output, which is replaced only once they are all there.
    where = out if fmt_out != ".parquet" else tmp_path / "out.parquet.partial.jsonl"
    if rows:
        assert str(caught.value) == (
            f"{where} holds the rows scored so far ({rows}), not the whole input; run the same command "
            "without --overwrite to resume from there"
        )
    elif fmt_out == ".parquet":
        assert (
            str(caught.value)
            == f"before any row was written; {where} holds no rows; run the same command again"
        )
    else:
        assert str(caught.value) == (
            f"before any row was written; {where} holds no rows (--overwrite had emptied it: the old output "
            "is gone); run the same command again"
        )
    assert (out.read_bytes() == before) == (fmt_out == ".parquet")
    summary = score_file(source, out, "toy", LengthScorer)  # a resume finds the rows the message counted
    assert summary.rows_skipped == rows and summary.rows_scored == 20 - rows
    assert [r["row"] for r in _read_output(out)] == list(range(20))


class VersionScorer(LengthScorer):
    """LengthScorer's answers, given by `version` (an alias that moved between two runs)."""

    def __init__(self, version: int) -> None:
        super().__init__()
        self.version = version

    def score(self, texts: list[str]) -> list[Scored]:
        return [Scored(s.label, s.score, self.version) for s in super().score(texts)]


@pytest.mark.parametrize("fmt_out", [".jsonl", ".csv", ".parquet"])
def test_a_resume_scored_by_another_version_is_refused_not_mixed_into_the_output(
    tmp_path: Path, fmt_out: str
) -> None:
    """A run stopped by a bad row, resumed once the alias had moved (or with another --version): the new
    rows were appended scored by version 2 after version 1's, one output of two models' answers."""
    pytest.importorskip("pyarrow")
    texts = [*TEXTS[:300]]
    texts[150] = " "
    source = _write(tmp_path / "in.jsonl", texts)
    out = tmp_path / f"out{fmt_out}"
    with pytest.raises(InputRowError, match="row 151"):
        score_file(source, out, "toy", lambda: VersionScorer(1), batch_rows=100)
    written = out if fmt_out != ".parquet" else out.with_name(out.name + ".partial.jsonl")
    before = written.read_bytes()
    _write(source, TEXTS[:300])
    with pytest.raises(
        UsageError,
        match=r"holds 150 rows scored by version 1 of 'toy', but this run scores with version 2 .* "
        r"\(--version 1 in this process\), or pass --overwrite",
    ):
        score_file(source, out, "toy", lambda: VersionScorer(2), batch_rows=100)
    assert written.read_bytes() == before  # left as it was
    summary = score_file(source, out, "toy", lambda: VersionScorer(1), batch_rows=100)
    assert (summary.rows_skipped, summary.rows_scored) == (150, 150)
    assert {r["version"] for r in _read_output(out)} == {1}
    # a finished Parquet output of an input that grew since is resumed too: by the same version only
    _write(source, TEXTS[:350])
    with pytest.raises(UsageError, match=r"holds 300 rows scored by version 1"):
        score_file(source, out, "toy", lambda: VersionScorer(2), batch_rows=100)
    assert score_file(source, out, "toy", lambda: VersionScorer(2), overwrite=True).rows_scored == 350
    assert {r["version"] for r in _read_output(out)} == {2}


@pytest.mark.parametrize("fmt_in", [".csv", ".jsonl", ".parquet"])
@pytest.mark.parametrize("name", [" text", "Text", "TEXT "])
def test_a_text_column_of_other_case_or_spaces_is_named_with_the_flag_to_pass(
    tmp_path: Path, fmt_in: str, name: str
) -> None:
    """A header typed `id, text` names ' text': the refusal listed 'id,  text' beside "no 'text' column",
    the space too thin to see; it names the near miss now, and the --text-column that reads it."""
    pytest.importorskip("pyarrow")
    source = _write(tmp_path / f"in{fmt_in}", TEXTS[:3], column=name)
    with pytest.raises((UsageError, InputRowError)) as caught:
        score_file(source, tmp_path / "out.jsonl", "toy", LengthScorer)
    assert f"{name!r} differs in case or spaces: pass --text-column {name!r}" in str(caught.value)
    assert score_file(source, tmp_path / "out.jsonl", "toy", LengthScorer, text_column=name).rows_scored == 3
