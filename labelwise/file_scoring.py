"""`labelwise classify` as functions: score a CSV / JSONL / Parquet file, row by row, into an output file.

    input rows (read_texts) -> chunks of `batch_rows` -> a scorer (the serving engine in this process,
    or a server over HTTP) -> output rows (OutputFile), flushed after every chunk

The output holds one row per input row, in input order: `row` (0-based input row), `label`, `score`,
`version`. A run that stops part-way (Ctrl-C, a bad row, a crash) leaves a valid prefix; the next run
on the same output skips the rows already there (`resume`). A bad input row stops the run after every
row before it is written, with an InputRowError naming the row.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import itertools
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from model_repository.errors import UsageError, validation_problems
from model_repository.storage import parse_root
from model_repository.text import lone_surrogate_at

from .errors import BadRequestError, ClientError, InputRowError, LabelwiseError, _rebuild_client_error

__all__ = [
    "FORMATS",
    "EngineScorer",
    "HttpScorer",
    "OutputFile",
    "ScoreSummary",
    "Scorer",
    "ScoringInterrupted",
    "check_url",
    "count_rows",
    "file_format",
    "left_as_it_was",
    "read_texts",
    "score_file",
    "settings_problem",
]

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
OUTPUT_FIELDS = ("row", "label", "score", "version")
# What makes two runs the same run for resuming: the scenario, the input's file name and the column (not
# the input's size: an input that grew is resumed, its new rows scored).
RUN_IDENTITY = ("scenario", "input_name", "text_column")
# And what the rows already scored were scored from: the record keeps [rows, SHA-256 of the first `rows`
# input texts] at the last two chunk boundaries, rewritten before each chunk's rows are written; a resume
# checks the input against the larger one the output holds (see score_file).
SCORED_TEXTS = "scored_texts_sha256"
# And the version that scored them (the last chunk's), recorded with them: a resume scored by another
# version (an alias moved since, another --version) would mix two versions' answers in one output.
SCORED_BY = "version"
# A Parquet output is written from its staged rows this many at a time (one row group each), so that a
# large output is never held in memory whole (all of it at once: some 380 MB a million rows).
_PARQUET_GROUP_ROWS = 65536
# csv's default field limit is 131072 characters; a longer text is still a text (the model truncates it).
# A C long: 2**31 - 1 where that is 32 bits (Windows).
_CSV_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)
# Where a CSV output's lines split at a lone CR (one not before a LF), and what a line of a quoted label
# cut by a kill may hold (see OutputFile._csv_rows).
_AFTER_LONE_CR = re.compile(rb"(?<=\r)(?!\n)")
_IN_QUOTED_LABEL = re.compile(r'(?:[^"\r]|""|\r(?!\n))*')
# The most one row of an output may span (a CSV record over several lines: a label holding line breaks).
# A row is a number, a label (a class name), a score and a version: a file with a longer one is not ours,
# and checking it stops there, not at the end of a field an unclosed quote left open to the file's end.
_OUTPUT_ROW_BYTES = 2**20


class ScoringError(LabelwiseError):
    """The scorer could not be set up or failed on a chunk (exit 1)."""


class ScoringInterrupted(KeyboardInterrupt):
    """Ctrl-C during score_file; its message says what the output holds now (OutputFile.interrupted)."""


def left_as_it_was(output: Path) -> str:
    """What a Ctrl-C before the output was first written to left: OutputFile.interrupted's first words, and
    the CLI's whole line for a Ctrl-C that lands before score_file has made its OutputFile."""
    return f"before any row was written; {output} was left as it was"


@dataclass(frozen=True)
class Scored:
    """The answer for one text: the best label, its score and the version that gave it."""

    label: str
    score: float
    version: int


class Scorer(Protocol):
    """What score_file needs from a model: the best label of each text, in order."""

    def score(self, texts: list[str]) -> list[Scored]: ...

    def close(self) -> None: ...


def file_format(path: Path, what: str) -> str:
    """csv, jsonl or parquet from the file's extension; UsageError naming the option otherwise."""
    if path.is_dir():  # not "unknown extension ''" (nor "does not exist" for a folder named in.csv)
        raise UsageError(f"{what} {path} is a folder; name a file ({', '.join(FORMATS)}) instead")
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UsageError(f"{what} {path}: unknown extension {path.suffix!r}; use one of {', '.join(FORMATS)}")
    return kind


def _refuse_symlink_loop(path: Path, what: str) -> None:
    """UsageError naming the option when the path's symlinks loop: Path.resolve raises RuntimeError
    ("Symlink loop") on such a path, and exists() says False, as if the file were missing."""
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(
                f"{what} {path}: its symlinks loop (too many levels of symbolic links); name the file itself"
            ) from None


# ---- input ---------------------------------------------------------------------------------------
class _Lines:
    """A binary file's lines decoded as UTF-8 one by one, so that a bad byte is named by its line; a
    byte order mark at the start of the file is dropped here, before a parser sees the line (a CSV
    header's quoted first field, `\ufeff"text"`, would otherwise not be read as quoted)."""

    def __init__(self, fh: BinaryIO, path: Path) -> None:
        self._fh = fh
        self._path = path
        self.line = 0
        self.rows_done = 0  # set by the reader: rows yielded so far

    def __iter__(self) -> Iterator[str]:
        for raw in self._fh:
            self.line += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad = raw[exc.start : exc.end].hex(" ")
                # Windows tools save "Unicode" text as UTF-16, which starts with its byte order mark
                utf16 = self.line == 1 and raw[:2] in (b"\xff\xfe", b"\xfe\xff")
                hint = ": the file is UTF-16 (its byte order mark); save it as UTF-8" if utf16 else ""
                raise InputRowError(
                    self._path,
                    self.rows_done + 1,
                    self.line,
                    f"invalid UTF-8 (byte {bad} at column {exc.start + 1}){hint}",
                ) from None
            yield line.removeprefix("\ufeff") if self.line == 1 else line


def _near_miss(column: str, names: Iterable[str]) -> str:
    """A hint for a --text-column the file holds only with other case or spaces around it (`id, text`
    typed by hand names ' text'), which a plain list of the names does not show."""
    near = [n for n in names if n != column and n.strip().casefold() == column.strip().casefold()]
    return f"; {near[0]!r} differs in case or spaces: pass --text-column {near[0]!r}" if near else ""


def _refuse_repeated_column(path: Path, where: str, names: list[str], column: str) -> None:
    """UsageError when the text column is named more than once: one would be read, the others left out
    saying nothing (CSV), or its name looked up in vain (Arrow: KeyError)."""
    if names.count(column) > 1:
        raise UsageError(
            f"{path}: {where} names {column!r} {names.count(column)} times; rename the others, or name "
            "another column with --text-column"
        )


# Each reader yields this once its file-level checks pass, so that read_texts can run them eagerly.
_READY = ""


def _csv_problem(exc: csv.Error, start_line: int) -> str:
    """What a csv.Error means for a record that starts on `start_line`."""
    message = str(exc)
    if "unexpected end of data" in message:
        return f"a quoted field opened on line {start_line} is never closed (an unmatched '\"')"
    if "new-line character seen in unquoted field" in message:
        return "a carriage return inside an unquoted field (CR-only line endings? save with LF or CRLF)"
    return f"not valid CSV ({message})"


def _csv_records(reader: Any, lines: _Lines, path: Path) -> Iterator[list[str]]:
    """The reader's records; a csv.Error becomes an InputRowError naming the record's first line."""
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputRowError(path, lines.rows_done + 1, start, _csv_problem(exc, start)) from None
        yield fields


def _lift_csv_field_limit() -> None:
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))


def _csv_texts(path: Path, column: str) -> Iterator[str]:
    _lift_csv_field_limit()
    with open(path, "rb") as fh:
        lines = _Lines(fh, path)
        reader = csv.reader(lines, strict=True)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise UsageError(f"{path}: the header (line 1): {_csv_problem(exc, 1)}") from None
        if not header:
            raise UsageError(f"{path}: empty file; expected a header row naming a {column!r} column")
        if column not in header:
            raise UsageError(
                f"{path}: no {column!r} column in the header (line 1: {', '.join(header)}); "
                f"name the text column with --text-column{_near_miss(column, header)}"
            )
        _refuse_repeated_column(path, "the header (line 1)", header, column)
        index = header.index(column)
        yield _READY
        blank: tuple[int, int] | None = None  # an empty line, refused once a row follows it
        for fields in _csv_records(reader, lines, path):
            row = lines.rows_done + 1
            if not fields:
                blank = blank or (row, reader.line_num)
                continue
            if blank is not None:
                raise InputRowError(path, blank[0], blank[1], "empty line")
            if index >= len(fields):
                raise InputRowError(
                    path, row, reader.line_num, f"{len(fields)} field(s), no value for column {column!r}"
                )
            if any(extra.strip() for extra in fields[len(header) :]):
                # an unquoted comma in a text: its column got the text's first part only, said nothing
                # (`a, "b, c"` is quoted to its writer, but CSV reads a quote after a space as text)
                spaced = any(f[:1].isspace() and f.lstrip().startswith('"') for f in fields)
                fix = (
                    "a quote after a space opens no quoted field: write the comma and the quote together "
                    '(,"like, this")'
                    if spaced
                    else 'a field holding a comma must be quoted ("like, this")'
                )
                raise InputRowError(
                    path, row, reader.line_num, f"{len(fields)} fields, the header names {len(header)}: {fix}"
                )
            text = fields[index]
            if not text.strip():
                raise InputRowError(path, row, reader.line_num, f"empty text in column {column!r}")
            lines.rows_done = row
            yield text


def _top_level_keys(line: str) -> list[str]:
    """The keys of a JSON object line as written, repeats kept (json.loads keeps a repeated key's last
    value, saying nothing); nested objects finish first, so the last object built is the line's own."""
    built: list[list[str]] = []

    def keys_of(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        built.append([key for key, _ in pairs])
        return dict(pairs)

    json.loads(line, object_pairs_hook=keys_of)
    return built[-1] if built else []


def _jsonl_texts(path: Path, column: str) -> Iterator[str]:
    # The column's name as a JSON string: a line holding it once cannot repeat the key (a quote inside a
    # string is escaped), so only a line holding it twice or more is parsed again to count the keys.
    token = json.dumps(column, ensure_ascii=False)
    with open(path, "rb") as fh:
        lines = _Lines(fh, path)
        yield _READY
        blank: tuple[int, int] | None = None  # empty lines at the end are the end of the file
        for line in lines:
            row = lines.rows_done + 1
            if not line.strip():
                blank = blank or (row, lines.line)
                continue
            if blank is not None:
                raise InputRowError(path, blank[0], blank[1], "empty line")
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputRowError(path, row, lines.line, f"not JSON ({exc.msg})") from None
            except RecursionError:
                raise InputRowError(path, row, lines.line, "JSON nested too deeply to read") from None
            except ValueError:  # int() refuses a number of more digits than its limit (4300 by default)
                raise InputRowError(
                    path,
                    row,
                    lines.line,
                    f"a JSON number of more than {sys.get_int_max_str_digits()} digits, too long to read",
                ) from None
            if not isinstance(record, dict):
                raise InputRowError(
                    path, row, lines.line, f"expected a JSON object, got {type(record).__name__}"
                )
            if column not in record:
                fields = ", ".join(record) or "none"
                raise InputRowError(
                    path,
                    row,
                    lines.line,
                    f"no {column!r} field (fields: {fields}); see --text-column{_near_miss(column, record)}",
                )
            if line.count(token) > 1 and (repeats := _top_level_keys(line).count(column)) > 1:
                raise InputRowError(
                    path, row, lines.line, f"the field {column!r} appears {repeats} times; keep one"
                )
            text = record[column]
            if not isinstance(text, str) or not text.strip():
                raise InputRowError(
                    path, row, lines.line, f"{column!r} is not a non-empty string: {text!r:.60}"
                )
            # JSON escapes may spell half a surrogate pair ("\ud800"): a string with no UTF-8 form, that
            # no request could carry.
            if (at := lone_surrogate_at(text)) is not None:
                raise InputRowError(
                    path,
                    row,
                    lines.line,
                    f"{column!r} holds a lone surrogate ({text[at]!r} at character {at + 1}): not valid "
                    "Unicode (half of an escaped pair, \\uD800-\\uDFFF, without the other half)",
                )
            lines.rows_done = row
            yield text


def _parquet_texts(path: Path, column: str) -> Iterator[str]:
    from .extras import require

    pa = require("pyarrow")
    pq = require("pyarrow.parquet")
    try:
        source = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise UsageError(f"{path}: not a readable Parquet file ({exc})") from None
    names = source.schema_arrow.names
    if column not in names:
        raise UsageError(
            f"{path}: no {column!r} column (columns: {', '.join(names)}); see --text-column"
            f"{_near_miss(column, names)}"
        )
    _refuse_repeated_column(path, "its schema", names, column)
    kind = source.schema_arrow.field(column).type
    # pandas writes a Categorical column as a dictionary of strings; its values are the texts.
    values = kind.value_type if pa.types.is_dictionary(kind) else kind
    text_types = ("string", "large_string", "binary", "large_binary", "string_view", "binary_view")
    if not any(getattr(pa.types, f"is_{name}", lambda _t: False)(values) for name in text_types):
        raise UsageError(f"{path}: column {column!r} holds {kind}, not text")
    yield _READY
    row = 0
    for batch in source.iter_batches(columns=[column], batch_size=4096):
        texts = batch.column(0)
        if pa.types.is_dictionary(texts.type):
            texts = texts.dictionary_decode()
        # As bytes: Arrow does not check UTF-8 when reading, so each value is decoded here, by row.
        for value in texts.cast(pa.binary()).to_pylist():
            row += 1
            if value is None:
                raise InputRowError(path, row, None, f"null in column {column!r}")
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputRowError(
                    path, row, None, f"invalid UTF-8 in column {column!r} ({exc.reason})"
                ) from None
            if not text.strip():
                raise InputRowError(path, row, None, f"empty text in column {column!r}")
            yield text


def read_texts(path: Path, column: str = "text") -> Iterator[str]:
    """The texts of a CSV / JSONL / Parquet file, in order; an unusable row raises InputRowError when
    it is reached (the rows before it have been yielded)."""
    kind = file_format(path, "--input")  # a folder is named as one
    _refuse_symlink_loop(path, "--input")  # not "does not exist": is_file() and exists() are False on one
    if not path.is_file():
        raise UsageError(f"--input {path} {'is not a regular file' if path.exists() else 'does not exist'}")
    reader = {"csv": _csv_texts, "jsonl": _jsonl_texts, "parquet": _parquet_texts}[kind]
    texts = reader(path, column)
    next(texts)  # runs the file-level checks (readable, the column exists) now, before any output
    return texts


def count_rows(path: Path) -> int | None:
    """The number of rows, cheaply (for the progress bar): Parquet's footer, else newlines (an upper
    bound for CSV with multi-line fields); None when it cannot tell."""
    kind = file_format(path, "--input")
    try:
        if kind == "parquet":
            from .extras import require

            return int(require("pyarrow.parquet").ParquetFile(path).metadata.num_rows)
        newlines = 0
        last = b"\n"
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                newlines += block.count(b"\n")
                last = block[-1:]
        lines = newlines + (last != b"\n")
        return max(0, lines - 1) if kind == "csv" else lines
    except (OSError, ValueError, LabelwiseError):  # pyarrow's ArrowInvalid is a ValueError
        return None


# ---- output ---------------------------------------------------------------------------------------
class _RowTooLong(Exception):
    """A row of an existing output runs past _OUTPUT_ROW_BYTES: the file is not an output of ours."""


class _WholeLines:
    """An output's lines decoded one by one, up to its last line break; what follows it (a line half
    written by a run killed mid-write, maybe cut inside a character) is kept undecoded in `cut`. `end`:
    bytes through the last line given. With `lone_cr_ends_line`, a CR not before a LF ends a line too, as
    when csv reads a file opened with newline="".

    A row is a line, or with `rows_span_lines` the lines from the last `new_row()` (a CSV record); one
    that runs past _OUTPUT_ROW_BYTES raises _RowTooLong as soon as it does, having read no further."""

    def __init__(self, fh: BinaryIO, lone_cr_ends_line: bool = False, rows_span_lines: bool = False) -> None:
        self._fh = fh
        self._split_cr = lone_cr_ends_line
        self._span = rows_span_lines
        self.line = 0  # whole lines read (each counted once, split at a lone CR or not)
        self.end = 0
        self.cut = b""
        self._line_end = 0  # bytes through the last whole line read (`end` may stop at a lone CR in it)
        self._row_start, self._row_line = 0, 1

    def new_row(self) -> None:
        """A row starts after the last line given."""
        self._row_start = self.end
        self._row_line = self.line + (self.end == self._line_end)

    def _too_long(self) -> _RowTooLong:
        past = f"runs past {_OUTPUT_ROW_BYTES // 2**20} MiB"
        if self._row_line > self.line:
            why = f"line {self._row_line} {past}"
        else:  # a quote left open reads on to the file's end as one field
            why = f"the record from line {self._row_line} {past} by line {self.line + 1} (a quote left open?)"
        return _RowTooLong(f"{why}: no row this command writes is that long")

    def __iter__(self) -> Iterator[str]:
        split_cr = self._split_cr
        while True:
            if not self._span:
                self.new_row()
            room = self._row_start + _OUTPUT_ROW_BYTES - self.end
            raw = self._fh.readline(room + 1)
            if len(raw) > room:
                raise self._too_long()
            if raw[-1:] != b"\n":
                self.cut = raw
                return
            self.line += 1
            self._line_end += len(raw)
            if split_cr and raw.find(b"\r", 0, -2) != -1:  # a CR before the line's end (\r\n or \n)
                for piece in _AFTER_LONE_CR.split(raw):
                    self.end += len(piece)
                    yield piece.decode("utf-8")
            else:
                self.end += len(raw)
                yield raw.decode("utf-8")


class OutputFile:
    """Rows appended to a JSONL or CSV file (Parquet: to `<output>.partial.jsonl`, written out as Parquet
    by `finish`), each chunk flushed; `done` rows were already there when it was opened.

    Opening only reads: an existing output is checked to be a partial output of this command, and is
    neither changed nor replaced (--overwrite) until the first rows are written, or `finish`."""

    def __init__(self, path: Path, overwrite: bool = False, run: dict[str, Any] | None = None) -> None:
        self.path = path
        self.kind = file_format(path, "--output")
        self.staging = path.with_name(path.name + ".partial.jsonl") if self.kind == "parquet" else path
        # What this run scores (scenario, input, column): recorded beside the output when its first rows
        # are written, and checked when a later run resumes it.
        self.run = run
        self.run_file = path.with_name(f".{path.name}.classify.json")
        self.recorded: dict[str, Any] = {}  # the run record found beside an output being resumed
        self.complete_rows: int | None = None  # a finished Parquet output already holds these
        self.done = 0
        self._fh: Any = None
        self._csv: Any = None
        self._keep: int | None = None  # bytes of the staging file to keep (a half-written last line cut)
        self._replace = overwrite  # the first open empties the output
        self.overwrite = overwrite
        self.opened = False  # set when the output is first opened to write: from then on it may have changed
        self.finished = False
        self._check_writable()
        if overwrite:
            return
        if self.kind == "parquet" and self.path.exists() and not self.staging.exists():
            from .extras import require

            try:
                parquet = require("pyarrow.parquet").ParquetFile(self.path)
                self.complete_rows = int(parquet.metadata.num_rows)
                columns = tuple(parquet.schema_arrow.names)
            except (OSError, ValueError) as exc:
                raise self._foreign(f"not a readable Parquet file: {exc}") from None
            if columns != OUTPUT_FIELDS:  # another Parquet file: never taken for a finished output
                raise self._foreign(f"its columns are {list(columns)}, not {list(OUTPUT_FIELDS)}")
            self.done = self.complete_rows
            self._check_same_run()
            return
        try:
            self.done = self._existing_rows()
        except (UnicodeDecodeError, csv.Error) as exc:
            raise self._foreign(str(exc)) from None
        if self.done:
            self._check_same_run()

    def _check_same_run(self) -> None:
        """A resumed output must come from the same scenario, input and column: rows of two runs in one
        file would look like one run's. An output without the record (written before it existed, or by
        hand) is taken as it is."""
        if self.run is None:
            return
        try:
            recorded = json.loads(self.run_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            raise self._foreign(f"its run record {self.run_file.name} is unreadable") from None
        if not isinstance(recorded, dict):
            raise self._foreign(f"its run record {self.run_file.name} is not a JSON object")
        self.recorded = recorded
        differ = [k for k in RUN_IDENTITY if k in recorded and recorded[k] != self.run.get(k)]
        if differ:
            was = ", ".join(f"{k} {recorded[k]!r}" for k in differ)
            now = ", ".join(f"{k} {self.run.get(k)!r}" for k in differ)
            raise UsageError(
                f"--output {self.path} holds {self.done} rows of another run ({was}; this run: {now}); "
                "pass --overwrite to replace it, or choose another --output"
            )

    def scored_checkpoints(self) -> list[tuple[int, str]]:
        """[(rows, digest of their texts)] from the record of the run being resumed (none in a record
        written before digests were kept)."""
        pairs = self.recorded.get(SCORED_TEXTS)
        if not isinstance(pairs, list):
            return []
        return [
            (p[0], p[1])
            for p in pairs
            if isinstance(p, list)
            and len(p) == 2
            and type(p[0]) is int
            and p[0] >= 0
            and isinstance(p[1], str)
        ]

    def check_version(self, version: int) -> None:
        """UsageError when the rows already there were scored by another version than `version`, the one
        this run's first rows were scored with (a record written before versions were kept says none)."""
        held = self.recorded.get(SCORED_BY)
        if type(held) is not int or held == version or not self.done:
            return
        scenario = (self.run or {}).get("scenario")
        raise UsageError(
            f"--output {self.path} holds {self.done} rows scored by version {held} of {scenario!r}, but this "
            f"run scores with version {version} (an alias moved since, or another --version): the output "
            f"would mix two versions' answers; score with version {held} to resume (--version {held} in this "
            "process), or pass --overwrite to score the file again"
        )

    def _record_run(self, scored: dict[str, Any] | None = None) -> None:
        if self.run is None:
            return
        tmp = self.run_file.with_name(self.run_file.name + ".tmp")
        try:
            tmp.write_text(
                json.dumps({**self.run, **(scored or {})}, ensure_ascii=False) + "\n", encoding="utf-8"
            )
            os.replace(tmp, self.run_file)  # a kill mid-write leaves the last record whole
        except OSError as exc:
            raise UsageError(
                f"--output {self.path}: cannot write {self.run_file} ({exc.strerror or exc})"
            ) from None

    def _check_writable(self) -> None:
        """UsageError now, before any model is loaded, when the output cannot be written there."""
        for p in (self.path, self.staging):
            if p.is_dir():
                raise UsageError(f"--output {self.path}: cannot write there ({p} is a directory)")
        folder = self.path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise UsageError(f"--output {self.path}: cannot write there ({folder} is not a directory)")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"--output {self.path}: cannot write there (no write permission on {folder})")

    def _first_line(self) -> bytes:
        """How a file this command writes starts."""
        return b"row,label,score,version\r\n" if self.kind == "csv" else b'{"row": 0, '

    def _existing_rows(self) -> int:
        """Rows already in the output, checked to be rows 0..n-1 of an earlier run of this command. Reads
        only, a line at a time: a half-written last line (a run killed mid-write) is cut when the file is
        opened to write."""
        if not self.staging.exists():
            return 0
        done = 0
        with open(self.staging, "rb") as fh:
            csv_rows = self.kind == "csv"
            lines = _WholeLines(fh, lone_cr_ends_line=csv_rows, rows_span_lines=csv_rows)
            try:
                rows = self._csv_rows(lines) if csv_rows else self._jsonl_rows(lines)
                for expected, value in enumerate(rows):
                    if str(value) != str(expected):
                        raise self._foreign(
                            f"output row {expected + 1} is input row {value}, expected {expected}"
                        )
                    done = expected + 1
            except UnicodeDecodeError as exc:
                raise self._foreign(f"line {lines.line}: {exc}") from None
            except _RowTooLong as exc:
                raise self._foreign(str(exc)) from None
        if self._keep is None and lines.cut:
            self._keep = lines.end
        if not lines.line:
            first = self._first_line()
            if lines.cut and not (first.startswith(lines.cut) or lines.cut.startswith(first)):
                raise self._foreign("its first line is not one this command writes")
        return done

    def _jsonl_rows(self, lines: _WholeLines) -> Iterator[Any]:
        """The `row` of each line of a JSONL output (lines end at \\n only: a label may hold U+2028 or U+0085,
        which str.splitlines() also ends a line at)."""
        for line in lines:
            try:
                row = json.loads(line)["row"]
            except (ValueError, KeyError, TypeError):
                raise self._foreign(f"line {lines.line} is not an output row") from None
            yield row

    def _csv_rows(self, lines: _WholeLines) -> Iterator[str]:
        """The `row` cells of a CSV output's records up to its last whole record: a quoted label may hold a
        line break, so the last line break can fall inside a record cut short (`_keep` then cuts it)."""
        record_lines: list[str] = []  # the lines of the record being read, for a cut's check below

        def read() -> Iterator[str]:
            for line in lines:
                record_lines.append(line)
                yield line

        _lift_csv_field_limit()  # a row's length is checked as it is read (_WholeLines), not by csv
        reader = csv.reader(read(), strict=True)
        header = next(reader, None)
        if header is None:
            return
        if tuple(header) != OUTPUT_FIELDS:
            raise self._foreign(f"its header is {header}")
        record_lines.clear()
        lines.new_row()
        done = 0
        whole = lines.end  # bytes through the last whole record: the reader reads no line past a record
        try:
            for record in reader:
                record_lines.clear()
                lines.new_row()
                whole = lines.end
                yield record[0] if record else ""
                done += 1
        except csv.Error:
            # Only a kill inside the next row's quoted label: its number, a comma, an open quote and the
            # label so far, with no record end (\r\n, the writer's) in it, up to the last line break.
            # Anything else (an unclosed quote before the last row swallowing the rows after it, bad
            # quoting) is not a cut. A line at a time: no part of the pattern holds a line break but \r\n.
            rest = itertools.chain(record_lines, lines)
            start = next(rest, "")
            if not start.startswith(f'{done},"'):
                raise
            for line in itertools.chain([start[len(f'{done},"') :]], rest):
                if not _IN_QUOTED_LABEL.fullmatch(line):
                    raise
            self._keep = whole

    def _open(self) -> None:
        """Open to write, on the first rows (or at `finish`): --overwrite replaces the old output now; a
        resumed one loses its half-written last line."""
        if self._fh is not None:
            return
        self.opened = True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._keep is not None:
                os.truncate(self.staging, self._keep)
            mode = "w" if self._replace else "a"
            self._fh = open(self.staging, mode, encoding="utf-8", newline="")  # noqa: SIM115 (closed by close)
        except OSError as exc:
            raise UsageError(f"--output {self.path}: cannot write there ({exc.strerror or exc})") from None
        if self._replace or self.done == 0:
            self._record_run()
        self._keep, self._replace = None, False  # done once: a later open (finish) appends
        self._csv = csv.writer(self._fh) if self.kind == "csv" else None
        if self._csv is not None and self.done == 0 and self._fh.tell() == 0:
            self._csv.writerow(OUTPUT_FIELDS)
            self._fh.flush()

    def _foreign(self, why: str) -> UsageError:
        return UsageError(
            f"--output {self.path} exists and is not a partial output of `labelwise classify` ({why}); "
            "pass --overwrite to replace it"
        )

    def append(
        self, first_row: int, scored: list[Scored], checkpoints: list[tuple[int, str]] | None = None
    ) -> None:
        """The rows, flushed; `checkpoints` (the digests before and after them) go into the run record
        first, so that whatever a kill leaves, the record has a digest at most as far as the output."""
        self._open()
        if checkpoints:
            self._record_run({SCORED_TEXTS: [list(c) for c in checkpoints], SCORED_BY: scored[-1].version})
        for i, s in enumerate(scored, start=first_row):
            if self._csv is not None:
                self._csv.writerow((i, s.label, f"{s.score:.6g}", s.version))
            else:
                record = {"row": i, "label": s.label, "score": float(f"{s.score:.6g}"), "version": s.version}
                self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        self.done = first_row + len(scored)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def reopen_complete(self) -> None:
        """A finished Parquet output of an input that has grown since: its rows go back into the staging
        file, and the run goes on from the first new input row (as a JSONL or CSV output resumes)."""
        from .extras import require

        source = require("pyarrow.parquet").ParquetFile(self.path)
        tmp = self.staging.with_name(self.staging.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for batch in source.iter_batches(batch_size=_PARQUET_GROUP_ROWS, columns=list(OUTPUT_FIELDS)):
                for record in batch.to_pylist():
                    fh.write(json.dumps({k: record[k] for k in OUTPUT_FIELDS}, ensure_ascii=False) + "\n")
        os.replace(tmp, self.staging)
        self.complete_rows = None

    def finish(self) -> None:
        """Close; for Parquet, write the staged rows to the output (atomically) and drop the staging. An
        output no rows were written to is made now (an input without rows gives an empty output)."""
        if self.complete_rows is not None:
            return
        self._open()
        self.close()
        if self.kind != "parquet":
            self.finished = True
            return
        from .extras import require

        pa = require("pyarrow")
        pq = require("pyarrow.parquet")
        schema = pa.schema(
            [("row", pa.int64()), ("label", pa.string()), ("score", pa.float64()), ("version", pa.int64())]
        )
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(self.staging, encoding="utf-8") as fh, pq.ParquetWriter(tmp, schema) as writer:
            while lines := list(itertools.islice(fh, _PARQUET_GROUP_ROWS)):
                columns: dict[str, list[Any]] = {name: [] for name in OUTPUT_FIELDS}
                for line in lines:
                    record = json.loads(line)
                    for name in OUTPUT_FIELDS:
                        columns[name].append(record[name])
                writer.write_table(pa.table(columns, schema=schema))
        os.replace(tmp, self.path)
        self.staging.unlink()
        self.finished = True

    def interrupted(self) -> str:
        """What a run stopped by Ctrl-C left, for its one line. Rows are counted on disk, as a resume would
        count them: a Ctrl-C inside a chunk leaves part of it written."""
        self.close()
        if self.finished:
            return f"after the last row was written; {self.path} is complete"
        where = self.staging if self.staging.exists() else self.path
        if not self.opened:
            if not self.done:
                return left_as_it_was(self.path)
            return (
                f"{left_as_it_was(where)}, holding the {self.done} rows scored before; run the same command "
                "again to resume from there"
            )
        try:
            held = OutputFile(self.path).done
        except (LabelwiseError, OSError):
            held = self.done
        if not held:
            gone = (
                " (--overwrite had emptied it: the old output is gone)"
                if self.overwrite and where == self.path
                else ""
            )
            return f"before any row was written; {where} holds no rows{gone}; run the same command again"
        return (
            f"{where} holds the rows scored so far ({held}), not the whole input; {self.to_resume()} to "
            "resume from there"
        )

    def to_resume(self) -> str:
        """How to go on from the rows written: the same command, less an --overwrite that would empty them."""
        return "run the same command without --overwrite" if self.overwrite else "run the same command again"


# ---- scorers -------------------------------------------------------------------------------------
def settings_problem(exc: Any) -> str:
    """A pydantic ValidationError as one line: `field: message` per error, joined by '; '."""
    return validation_problems(exc, name=lambda loc: ".".join(map(str, loc)) or "settings")


def check_url(url: str) -> str:
    """The server URL for --url, checked (http or https, a host, a valid port: client.url_problem);
    UsageError otherwise."""
    from .client import URL_FORM, url_problem

    problem = url_problem(url.strip())
    if problem is not None:
        raise UsageError(f"--url {url!r} {problem}; {URL_FORM}")
    return url.strip()


class HttpScorer:
    """Scores through a running labelwise server with the Python client (chunks, concurrency, retries).
    A server that refuses connections (being restarted) is tried again for `retry_for` seconds."""

    def __init__(
        self,
        url: str,
        scenario: str,
        api_key: str | None = None,
        concurrency: int = 4,
        timeout_s: float = 60.0,
        retry_for: float = 30.0,
    ) -> None:
        from .client import LabelwiseClient

        if not retry_for >= 0:  # NaN included
            raise UsageError(f"--retry-for must be 0 seconds or more, got {retry_for:g}")
        self.scenario = scenario
        self._client = LabelwiseClient(
            check_url(url),
            api_key=api_key,
            timeout_s=timeout_s,
            concurrency=concurrency,
            connect_retry_s=retry_for,
        )

    def _bad_answer(self, why: str) -> ClientError:
        message = f"{self._client.base_url} did not answer as a labelwise server: {why}"
        return ClientError(None, {"error": {"type": "bad_answer", "message": message}})

    def score(self, texts: list[str]) -> list[Scored]:
        import httpx
        from pydantic import ValidationError

        from .errors import ScenarioNotServedError

        # A text over the server's character limit would be refused (422) and stop the file there,
        # where scoring in-process reads it: the model reads far fewer tokens than that many characters
        # (max_length_tokens <= 4096), so its first max_chars_per_text characters score the same. Cut after
        # its leading whitespace, which no tokenizer reads: a text opening with more spaces than the limit
        # was cut to spaces alone, which the server refuses (422) where in-process scoring scores the text.
        try:
            self._client._discover()
            cut = self._client.max_chars_per_text
            if cut is not None:
                texts = [t.lstrip()[:cut] if len(t) > cut else t for t in texts]
            result = self._client.classify(self.scenario, texts, top_k=1)
        except ScenarioNotServedError as exc:  # the server's message does not echo the name back
            raise ScoringError(
                f"scenario {self.scenario!r} is not served at {self._client.base_url} ({exc})"
            ) from None
        except ClientError:  # the server's answer, or the client's own refusal of a text: as it is
            raise
        except ValidationError as exc:  # a JSON answer of the wrong shape
            raise self._bad_answer(settings_problem(exc)) from None
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:  # not JSON, no fields
            first = (str(exc).splitlines() or [""])[0]
            raise self._bad_answer(f"{type(exc).__name__}: {first}") from None
        except httpx.HTTPError as exc:  # e.g. a body that cannot be decoded
            raise self._bad_answer(f"{type(exc).__name__}: {exc}") from None
        if len(result.results) != len(texts) or any(not row for row in result.results):
            raise self._bad_answer(f"{len(result.results)} result(s) for {len(texts)} text(s)")
        versions = result.versions or [result.version] * len(texts)
        if len(versions) != len(texts):
            raise self._bad_answer(f"{len(versions)} version(s) for {len(texts)} text(s)")
        return [
            Scored(row[0].label, row[0].score, v) for row, v in zip(result.results, versions, strict=True)
        ]

    def close(self) -> None:
        self._client.close()


class EngineScorer:
    """Scores in this process on the serving engine, as a replica does: a ClassifierService's registry
    (checksums verified, the same precision choice and tokenizer) and its OnnxEngine (token-budgeted
    passes). Only the batch slots are left out: they gather rows of concurrent requests inside a Serve
    replica, and here each chunk already is one batch."""

    def __init__(
        self,
        repository: Path | None,
        scenario: str,
        version: str = "production",
        threads: int = 0,
        precision: str = "auto",
    ) -> None:
        from .extras import require

        require("onnxruntime")
        require("ray")  # serving.service builds its batcher with ray.serve
        from pydantic import ValidationError

        from serving import ServingConfig
        from serving.engine import Row
        from serving.service import ClassifierService, tokenize_or_refuse, top_labels

        fields: dict[str, Any] = {
            "scenarios": [{"name": scenario, "alias": version}],
            # 0: what a replica with num_cpus 1 runs, one thread. On the busy 2-core box one thread beat
            # two (MiniLM LoRA int8, 2000 rows: 531 and 472 rows/s vs 285 and 205); try more when idle.
            "ort_intra_op_threads": threads,
            "precision": precision,
        }
        if repository is not None:
            fields["repository"] = str(repository)
        try:
            config = ServingConfig(**fields)
        except ValidationError as exc:  # --threads, or a LABELWISE_* variable, out of range
            raise UsageError(f"invalid serving settings: {settings_problem(exc)}") from None
        root = parse_root(config.repository)
        if isinstance(root, Path) and not root.is_dir():  # an object store is checked when it opens
            what = "is a file, not a folder of scenarios" if root.exists() else "does not exist"
            raise UsageError(f"--repository {config.repository} {what}")
        self._row, self._top, self._read = Row, top_labels, tokenize_or_refuse
        self._service = ClassifierService(config)
        self._service.registry.poll_once()
        state = next(s for s in self._service.registry.states() if s.name == scenario)
        if state.loaded is None:
            why = state.last_error or "not in the repository"
            raise ScoringError(
                f"cannot load scenario {scenario!r} ({version}) from {config.repository}: {why}"
            )
        self.scenario = scenario
        self.version = state.loaded.version

    def score(self, texts: list[str]) -> list[Scored]:
        from serving.errors import InvalidRequestError

        loaded = self._service.registry.get(self.scenario)  # bound once per chunk, as per request
        try:  # a text its model would read nothing of is refused as a server refuses it (422, texts.<i>)
            ids, cut = self._read(loaded, texts)
        except InvalidRequestError as exc:
            error = {"type": exc.code, "message": str(exc), "field": exc.field}
            raise BadRequestError(None, {"error": error}) from None
        rows = [self._row(loaded, t, i, c) for t, i, c in zip(texts, ids, cut, strict=True)]
        results = self._service.engine.classify(rows)
        out = []
        for result in results:
            if isinstance(result, Exception):
                raise ScoringError(f"the engine failed on a chunk: {type(result).__name__}: {result}")
            best = self._top(loaded.labels, result.probs, 1)[0]
            out.append(Scored(best["label"], best["score"], loaded.version))
        return out

    def close(self) -> None:
        self._service.stop()


# ---- the run -------------------------------------------------------------------------------------
@dataclass
class ScoreSummary:
    """What one run did: rows scored now, rows found already scored, wall time, and where it wrote."""

    input: str
    output: str
    scenario: str
    rows_scored: int
    rows_skipped: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.rows_scored / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "output": self.output,
            "scenario": self.scenario,
            "rows_scored": self.rows_scored,
            "rows_skipped": self.rows_skipped,
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows_per_s, 1),
        }


class _TextsDigest:
    """A running SHA-256 of the texts read so far, in order: checked against `expected` (a resumed
    output's checkpoint) once that many rows are read, and noted at `mark` rows (where this run starts)."""

    def __init__(self, output: Path, expected: tuple[int, str] | None, mark: int = 0) -> None:
        self.output = output
        self.expected = expected if expected is not None and expected[0] > 0 else None
        self.mark = mark
        self.rows = 0
        self._sha = hashlib.sha256()
        self.marked = self.hexdigest() if mark == 0 else None

    def hexdigest(self) -> str:
        return self._sha.hexdigest()

    def read(self, texts: Iterable[str]) -> Iterator[str]:
        for text in texts:
            data = text.encode("utf-8", "surrogatepass")
            self._sha.update(len(data).to_bytes(8, "little") + data)
            self.rows += 1
            if self.rows == self.mark:
                self.marked = self.hexdigest()
            if self.expected is not None and self.rows == self.expected[0]:
                if self.hexdigest() != self.expected[1]:
                    raise UsageError(
                        f"--output {self.output} holds scores of the input's first {self.rows} rows, but "
                        "those rows hold other texts now (the input was edited since); pass --overwrite "
                        "to score the file again"
                    )
                self.expected = None
            yield text


def _checkpoint(pairs: list[tuple[int, str]], rows: int, output: Path) -> tuple[int, str] | None:
    """The record's checkpoint to check a resume of an output holding `rows` rows against: the largest at
    most `rows` (a kill between the record and the rows leaves the record one chunk ahead). None without
    checkpoints; UsageError when every one is past the output (it was cut, or lost rows it had written)."""
    if not pairs:
        return None
    fits = [p for p in pairs if p[0] <= rows]
    if not fits:
        raise UsageError(
            f"--output {output} holds {rows} rows, fewer than the {min(p[0] for p in pairs)} its run record "
            "says were written: it was cut, or not all of it reached the disk; pass --overwrite to score the "
            "file again"
        )
    return max(fits)


def _named_by_row(exc: ClientError, first: int, path: Path) -> ClientError:
    """A server's refusal of one text of the chunk that starts at row `first` names it by its index in
    the chunk (`texts.38`), which is no row of the file: named by its index among the file's texts instead
    (texts.550, the output's `row`), and by the row bad input rows are named by (1-based)."""
    from .client import _TEXT_FIELD, _rebased

    found = _TEXT_FIELD.fullmatch(exc.field) if isinstance(exc.field, str) else None
    rebased = _rebased(exc, first)
    detail = rebased.body.get("error") if isinstance(rebased.body, dict) else None
    if found is None or not isinstance(detail, dict):
        return exc
    row = first + int(found.group(1)) + 1
    message = f"{detail.get('message')} ({path}: row {row})"
    return type(exc)(exc.status, {**rebased.body, "error": {**detail, "message": message}}, exc.request_id)


def _rows_kept(exc: ClientError, out: OutputFile) -> ClientError:
    """A run the server stopped (unreachable after the retries, a refusal) once rows were written: its
    message says where they are and that the same command resumes, as a bad input row's does (a JSONL or
    CSV output cut short looks like a finished one)."""
    detail = exc.body.get("error") if isinstance(exc.body, dict) else None
    if not out.done or not isinstance(detail, dict):
        return exc
    where = out.path if out.staging == out.path else f"{out.staging} (Parquet once complete)"
    message = (
        f"{detail.get('message')}; the {out.done} row(s) scored before it are in {where}; "
        f"{out.to_resume()} to resume"
    )
    body = {**exc.body, "error": {**detail, "message": message}}
    return _rebuild_client_error(type(exc), exc.status, body, exc.request_id)


def _chunked(texts: Iterable[str], skip: int, size: int, output: Path) -> Iterator[tuple[int, list[str]]]:
    """(first row index, texts) chunks after `skip` rows (those `output` holds); on a bad row, the rows
    before it come out as a last chunk, then its InputRowError."""
    chunk: list[str] = []
    first = skip
    index = -1
    try:
        for index, text in enumerate(texts):
            if index < skip:
                continue
            chunk.append(text)
            if len(chunk) == size:
                yield first, chunk
                first, chunk = index + 1, []
    except InputRowError:
        if chunk:
            yield first, chunk
        raise
    if chunk:
        yield first, chunk
    if index + 1 < skip:
        raise _input_cut(output, skip, index + 1)


def _same_file(a: Path, b: Path) -> bool:
    """Whether two existing paths are one file (a hard link, or any other second name for it)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): not the same file
        return False


def _input_cut(output: Path, held: int, rows: int) -> UsageError:
    """An input of fewer rows than its output holds scores of: named like an edit in the scored part,
    which output, and how to go on."""
    return UsageError(
        f"--output {output} holds scores of {held} rows, but the input has only {rows} now (it was cut "
        "since); pass --overwrite to score the file again"
    )


def score_file(
    input_path: Path,
    output_path: Path,
    scenario: str,
    make_scorer: Callable[[], Scorer],
    *,
    text_column: str = "text",
    batch_rows: int = 512,
    overwrite: bool = False,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> ScoreSummary:
    """Score every input row not yet in the output; `on_progress(rows done, total)` after each chunk.

    A bad row raises InputRowError once the rows before it are written; the message says so."""
    if batch_rows < 1:
        raise UsageError(f"--batch-rows must be at least 1, got {batch_rows}")
    _refuse_symlink_loop(input_path, "--input")
    _refuse_symlink_loop(output_path, "--output")
    if input_path.resolve() == output_path.resolve() or _same_file(input_path, output_path):
        # a hard link too: with --overwrite, writing it would empty the input
        raise UsageError(f"--output {output_path} is the input file")
    texts = read_texts(input_path, text_column)
    total = count_rows(input_path)
    run = {
        "scenario": scenario,
        "input_name": input_path.name,
        "text_column": text_column,
        "input": str(input_path.resolve()),
    }
    out = OutputFile(output_path, overwrite=overwrite, run=run)
    skipped = out.done
    check = _checkpoint(out.scored_checkpoints(), skipped, output_path)
    digest = _TextsDigest(output_path, check, mark=skipped)
    texts = digest.read(texts)
    if out.complete_rows is not None:
        if file_format(input_path, "--input") == "parquet":  # its footer counts: read only what is checked
            for _ in itertools.islice(texts, check[0] if check else 0):
                pass
            rows = total
        else:  # exact, by the reader (which checks the digest): newlines over-count multi-line CSV fields
            rows = sum(1 for _ in texts)
        if rows is not None and out.complete_rows > rows:
            raise _input_cut(output_path, out.complete_rows, rows)
        if rows is None or out.complete_rows == rows:
            return ScoreSummary(str(input_path), str(output_path), scenario, 0, skipped, 0.0)
        out.reopen_complete()  # the input has grown since: score its new rows
        digest = _TextsDigest(output_path, None, mark=skipped)  # checked above
        texts = digest.read(read_texts(input_path, text_column))
    start = time.perf_counter()
    # The scorer is made (the model loaded, or the server asked) on the first chunk, and the output is
    # opened only once that chunk is scored: a failed load leaves an existing output as it was.
    scorer: Scorer | None = None
    try:
        if on_progress is not None:
            on_progress(out.done, total)
        for first, chunk in _chunked(texts, skipped, batch_rows, output_path):
            if scorer is None:
                scorer = make_scorer()
                start = time.perf_counter()  # throughput counts scoring, not loading the model
            try:
                scored = scorer.score(chunk)
            except ClientError as exc:
                raise _rows_kept(_named_by_row(exc, first, input_path), out) from None
            if not out.opened:  # before the output is touched: its rows must be this version's too
                out.check_version(scored[0].version)
            # The digests before and after the chunk, recorded before its rows are written: the reader has
            # read exactly through the chunk's last row (not past a bad row: it raised before counting it).
            after = (digest.rows, digest.hexdigest()) if digest.rows == first + len(chunk) else None
            before = (first, digest.marked) if digest.marked is not None and first == digest.mark else None
            out.append(first, scored, [c for c in (before, after) if c is not None] or None)
            if after is not None:
                digest.mark, digest.marked = after
            if on_progress is not None:
                on_progress(out.done, total)
        out.finish()
    except KeyboardInterrupt:
        raise ScoringInterrupted(out.interrupted()) from None
    except InputRowError as exc:
        out.close()
        where = output_path if out.staging == output_path else f"{out.staging} (Parquet once complete)"
        if exc.row <= skipped:  # a row this output already holds a score of: the input changed there
            kept = (
                f"{output_path} already holds a score of row {exc.row}: the input was edited in the part "
                "already scored, so earlier scores may be of other texts; fix the row and pass --overwrite "
                "to score the file again"
            )
        elif out.done:
            again = "again without --overwrite" if overwrite else "again"
            kept = f"the {out.done} row(s) before it are in {where}; fix the row and run {again} to resume"
        else:
            kept = "nothing was written; fix the row and run again"
        raise InputRowError(exc.path, exc.row, exc.line, f"{exc.what}; {kept}") from None
    finally:
        if scorer is not None:
            scorer.close()
        out.close()
    seconds = time.perf_counter() - start
    return ScoreSummary(str(input_path), str(output_path), scenario, out.done - skipped, skipped, seconds)
