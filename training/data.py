"""Load labeled text from CSV / JSONL / Parquet, clean it, map labels to ids, split and cap it."""

from __future__ import annotations

import csv
import glob
import hashlib
import itertools
import json
import logging
import math
import re
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_repository.identity import file_sha256
from model_repository.text import lone_surrogate_at, normalize_text

from .config import CleaningConfig, ScenarioConfig, TrainConfig
from .errors import DataError, not_a_file

log = logging.getLogger(__name__)

_FORMATS = {".csv": "csv", ".tsv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


# The test split's seed is the project's, not the run's: every run, budget and tuning trial of a
# scenario holds out the same rows.
TEST_SPLIT_SEED = 20161
# How held-out rows are chosen: 1 row by row (until 5 December 2026), 2 by distinct cleaned text
# (grouped_split). Results recorded under another version are scored on other rows (labelwise/results.py).
SPLIT_VERSION = 2
# The manifest metrics' key of held_out_record: what identifies the rows a version held out.
HELD_OUT = "held_out"


@dataclass
class LabeledTexts:
    """Cleaned texts with label ids in the scenario's label order; `raw` keeps the file's texts (what a
    client would send: the serving engine cleans them itself)."""

    texts: list[str]
    label_ids: list[int]
    source: str
    raw: list[str] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: np.ndarray | list[int], source: str | None = None) -> LabeledTexts:
        return LabeledTexts(
            [self.texts[i] for i in index],
            [self.label_ids[i] for i in index],
            source or self.source,
            None if self.raw is None else [self.raw[i] for i in index],
        )


@dataclass
class PreparedData:
    """Train and validation sets ready to tokenize."""

    train: LabeledTexts
    validation: LabeledTexts
    labels: list[str]
    validation_is_split: bool
    dropped_validation_rows: int = 0
    test: LabeledTexts | None = None

    def train_counts(self) -> list[int]:
        counts = Counter(self.train.label_ids)
        return [counts.get(i, 0) for i in range(len(self.labels))]


def clean_text(text: str, cleaning: CleaningConfig) -> str:
    """The scenario's cleaning: the same function serving applies to a request's text."""
    return normalize_text(text, cleaning)


def read_table(path: Path, columns: list[str], column_fix: str | None = None) -> dict[str, list[Any]]:
    """Read a local CSV/JSONL/Parquet file with HF datasets; raise DataError naming the file or column.
    column_fix: what to do about a missing column when the caller cannot take a scenario config (a file
    scored against a published version); default, set the scenario config's columns."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} {not_a_file(path)}")
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"data file {path}: unsupported extension {path.suffix!r} (use .csv, .jsonl or .parquet)"
        )
    if path.stat().st_size == 0:
        raise DataError(f"data file {path} is empty")
    import datasets

    datasets.disable_progress_bars()
    # TSV: tabs separate and nothing quotes (a text `"Great" movie` keeps its quotes, as written).
    kwargs: dict[str, Any] = {"delimiter": "\t", "quoting": 3} if path.suffix.lower() == ".tsv" else {}
    if fmt == "csv":
        _check_row_widths(path, tsv="delimiter" in kwargs)
        # Every cell as written: no guessing of types or missing values, so a text "NA" or "null" stays a
        # text, labels "true" / "007" stay those strings, and an empty cell is "" (refused by name below).
        # index_col=False: a trailing comma on every row is an empty last cell, not a shifted index.
        kwargs.update(na_filter=False, converters={c: str for c in columns}, index_col=False)
    # datasets logs a parser failure itself (ERROR lines naming the exception) before raising it: the one
    # line below, naming the file and the cause, is the error the user gets.
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        # A cache of this read alone: datasets keys its shared cache of a local file on path and mtime, so
        # a file rewritten with its old mtime kept (cp -p, rsync -a, an archive) came back as the old rows.
        with tempfile.TemporaryDirectory(prefix="labelwise-read-") as cache, warnings.catch_warnings():
            # pandas' "loss of data with index_col=False": rows wider than the header were refused above,
            # so what it drops here is only the empty cell after a row's trailing delimiter.
            warnings.filterwarnings("ignore", message="Length of header or names does not match")
            # data_files is a glob pattern to datasets: a folder named `data [1]` matched no file
            table = datasets.load_dataset(
                fmt,
                data_files=glob.escape(str(path)),
                split="train",
                keep_in_memory=True,
                cache_dir=cache,
                **kwargs,
            )
    except Exception as exc:  # datasets wraps parser errors in many types
        # Its own message ("An error occurred while generating the dataset") says nothing: the parser's
        # error at the root of the chain names the cause (a quote left open, a byte that is not UTF-8).
        root = _root_cause(exc)
        if isinstance(root, UnicodeDecodeError):
            raise DataError(
                f"data file {path} is not UTF-8 text ({_bad_byte(root)}); re-save it as UTF-8"
            ) from exc
        if "corresponds to no data" in str(root):  # datasets' words for a file that parsed to zero rows
            raise DataError(f"data file {path} has {_NO_ROWS[fmt]}") from exc
        # the JSON lines reader calls a lone surrogate "Trailing data" or the like
        if fmt == "json" and (surrogate := _lone_surrogate_error(path)) is not None:
            raise surrogate from exc
        if fmt == "json" and (not_object := _non_object_error(path)) is not None:
            raise not_object from exc
        if fmt == "json" and (syntax := _json_syntax_error(path)) is not None:
            raise syntax from exc
        raise DataError(
            f"data file {path} could not be read as {fmt}: {str(root) or type(root).__name__}"
        ) from exc
    finally:
        datasets.logging.set_verbosity(verbosity)
        datasets.enable_progress_bars()
    # a JSON array's reader (pandas' ujson) drops a lone surrogate from the text without a word
    if fmt == "json" and _is_json_array(path) and (surrogate := _lone_surrogate_error(path)) is not None:
        raise surrogate
    missing = [c for c in columns if c not in table.column_names]
    if missing and fmt == "json" and (not_object := _non_object_error(path)) is not None:
        raise not_object  # lines of `[1]` alone read as a column named 'text', said to lack 'label'
    if missing:
        fix = column_fix or "set text_column / label_column in the scenario config"
        if fmt == "csv" and len(table.column_names) == 1:
            # one column whose name holds the wanted ones around another separator: `text;label`
            header = table.column_names[0]
            separator = next(
                (sep for sep in (";", "\t", "|") if set(columns) <= set(header.split(sep))), None
            )
            if separator == "\t":
                fix = "its columns are separated by tabs: name the file .tsv"
            elif separator is not None:
                fix = f"its columns are separated by {separator!r}: save it with commas"
        # `text, label` or `Text`: a name with a stray space or in another case, not another column to set
        found = {c.strip().casefold(): c for c in table.column_names}
        if renames := [f"{found[m.casefold()]!r} to {m!r}" for m in missing if m.casefold() in found]:
            fix = f"columns are named otherwise in the file: rename {' and '.join(renames)} there"
        raise DataError(
            f"data file {path}: missing column {missing[0]!r} (columns found: {table.column_names}); {fix}"
        )
    if table.num_rows == 0:
        raise DataError(f"data file {path} has {_NO_ROWS[fmt]}")
    return {c: _column(table, c, path) for c in columns}


_NO_ROWS = {"csv": "a header but no rows", "json": "no rows", "parquet": "no rows"}


def _root_cause(exc: BaseException) -> BaseException:
    """The first error of an exception chain (explicit cause, else the error being handled)."""
    seen = {id(exc)}
    while (nxt := exc.__cause__ or exc.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        exc = nxt
    return exc


def _column(table: Any, name: str, path: Path) -> list[Any]:
    """A column as a list, read now: datasets decodes text lazily, so a JSONL file with bytes that are not
    UTF-8 loads fine and only fails later, mid-loop, with a bare UnicodeDecodeError."""
    column = table[name]
    try:
        return column[:]
    except UnicodeDecodeError as exc:
        # Halve the rows until one is left: a few batch reads, on the error path only.
        lo, hi = 0, table.num_rows
        while hi - lo > 1:
            mid = (lo + hi) // 2
            try:
                column[lo:mid]
            except UnicodeDecodeError:
                hi = mid
            else:
                lo = mid
        raise DataError(
            f"data file {path}, {_row_place(path, lo)}: column {name!r} is not UTF-8 text "
            f"({_bad_byte(exc)}); re-save the file as UTF-8"
        ) from exc


def _bad_byte(exc: UnicodeDecodeError) -> str:
    """The first byte the decoder refused, in the words a person can search the file for."""
    return f"byte 0x{exc.object[exc.start]:02x}: {exc.reason}"


def _check_row_widths(path: Path, tsv: bool) -> None:
    """DataError naming the first row with more cells than the header: pandas (index_col=False) cuts the
    extra cells off with a warning, so a text holding an unquoted comma trained as its first part, or its
    second part was taken for the label. Extra cells that are empty (a delimiter ending the row) pass."""
    records = _csv_records(path)
    try:
        _, _, header = next(records, (0, 0, []))
        for row, line, cells in records:
            if len(cells) > len(header) and any(cells[len(header) :]):
                where = "tab" if tsv else "comma"
                raise DataError(
                    f"data file {path}, {_csv_place(row, line)}: {len(cells)} cells where the header has "
                    f"{len(header)}; a text with a {where} in it must be quoted"
                    + (" (or use a .csv file: a .tsv is read without quoting)" if tsv else "")
                )
    except csv.Error:
        return  # broken quoting: the reader below names it


def _csv_records(path: Path) -> Iterator[tuple[int, int, list[str]]]:
    """(row, line, cells) of each record of a CSV/TSV, header first, as pandas reads them: `row` as a
    spreadsheet numbers it (a blank line is a row), `line` the file line it starts on (a quoted text can
    span lines). Blank lines, which pandas skips, are not yielded."""
    tsv = path.suffix.lower() == ".tsv"
    options: dict[str, Any] = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if tsv else {}
    limit = csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a long text is a text
    try:
        # errors="replace": a byte that is not UTF-8 is the reader's to name, with its position
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
            reader = csv.reader(fh, **options)
            line = 1
            for row, cells in enumerate(reader, 1):
                # pandas skips a line of spaces and tabs too; a quoted "" is a record
                if cells and (len(cells) > 1 or cells[0] == "" or cells[0].strip(" \t")):
                    yield row, line, cells
                line = reader.line_num + 1
    finally:
        csv.field_size_limit(limit)


def _csv_place(row: int, line: int) -> str:
    return f"row {row}" + (f" (line {line})" if line != row else "")


def _is_json_array(path: Path) -> bool:
    """Whether a .json file holds one array (the reader takes it whole) rather than JSON lines."""
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        return fh.read(4096).lstrip().startswith("[")


def _json_records(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, value) of each record of a JSON lines file (`row N`, its line) or JSON array (`element N`),
    parsed by json, which keeps a lone surrogate; a line that does not parse is passed over."""
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        if _is_json_array(path):
            text = fh.read()
            try:  # no surrogate escape anywhere: nothing to parse for
                values = json.loads(text) if re.search(r"\\u[dD][89a-fA-F]", text) else []
            except ValueError:
                return
            yield from (
                (f"element {n}", v) for n, v in enumerate(values if isinstance(values, list) else [], 1)
            )
            return
        for n, line in enumerate(fh, 1):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            yield f"row {n}", value


def _lone_surrogate_error(path: Path) -> DataError | None:
    """A DataError naming the first JSON record whose values hold a lone surrogate (a `\\ud83d` escape
    without its pair), which has no UTF-8 form and no tokenizer reads."""
    for where, value in _json_records(path):
        text = json.dumps(value, ensure_ascii=False)
        if (at := lone_surrogate_at(text)) is not None:
            return DataError(
                f"data file {path}, {where}: a text holds a lone surrogate (\\u{ord(text[at]):04x}: half of "
                "a character, often an emoji cut in two), which has no UTF-8 form; fix or remove it"
            )
    return None


_JSON_KINDS = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}


def _non_object_error(path: Path) -> DataError | None:
    """A DataError naming the first line of a JSON lines file that is not an object (`[1]`, `"hi"`, `5`):
    the reader's own words were "Column() changed from object to string in row 0", naming no line. A file
    that is one array (`[1]` alone included) is read whole, and each element is a row."""
    records: Iterator[tuple[str, Any]] = _json_records(path)
    if _is_json_array(path):  # _json_records parses an array only to look for surrogates
        try:
            values = json.loads(path.read_text(encoding="utf-8-sig", errors="replace"))
        except ValueError:
            return None
        records = ((f"element {n}", v) for n, v in enumerate(values if isinstance(values, list) else [], 1))
    for where, value in records:
        if not isinstance(value, dict):
            kind = "null" if value is None else _JSON_KINDS.get(type(value), type(value).__name__)
            return DataError(
                f"data file {path}, {where}: {kind}, not a JSON object; each row must be one object of "
                'its fields, e.g. {"text": ..., "label": ...}'
            )
    return None


_JSON_SPACE = re.compile(r"[ \t\r\n]*")  # what JSON allows between values (always matches)


def _json_syntax_error(path: Path) -> DataError | None:
    """A DataError naming the line and column where a JSON lines file (or JSON array) stops being JSON: the
    reader's words were a position in the block it was reading ("Trailing data at position 36"), no line.
    Values are parsed one after another, as the reader takes them, so an object written over lines is one."""
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    decoder = json.JSONDecoder()
    try:
        if _is_json_array(path):
            decoder.decode(text)
        else:
            at = _JSON_SPACE.match(text).end()
            while at < len(text):
                _, end = decoder.raw_decode(text, at)
                at = _JSON_SPACE.match(text, end).end()
    except json.JSONDecodeError as exc:
        return DataError(
            f"data file {path}, line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg})"
        )
    return None


def _row_place(path: Path, row: int) -> str:
    """Where a person finds row `row` (0-based, as the reader counted it): a CSV/TSV's row as a spreadsheet
    numbers it, the header being row 1, with the line it starts on where that differs; a JSON lines file's
    line; a JSON array's element; a Parquet row. The readers skip blank lines, so counting records misled."""
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt == "parquet":
        return f"row {row + 1}"
    if fmt == "json":
        if _is_json_array(path):
            return f"element {row + 1}"
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            lines = (n for n, text in enumerate(fh, 1) if text.strip(" \t\r\n"))  # as pyarrow skips them
            return f"row {next(itertools.islice(lines, row, None), row + 1)}"
    try:
        for i, (number, line, _) in enumerate(_csv_records(path)):
            if i == row + 1:  # after the header
                return _csv_place(number, line)
    except csv.Error:
        pass
    return f"row {row + 2}"


def label_text(value: Any) -> str:
    """A label cell as the label name it spells: JSON `true` is "true" and `1.0` is "1" (JSONL and
    Parquet keep types; str() gave "True" and "1.0", which matched no label), else its text, stripped."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _spelled_otherwise(name: str, labels: Sequence[str]) -> str | None:
    """The label of `labels` that `name` spells in another case or number form (`Spam`, `1.0`), if any."""
    for known in labels:
        if name.casefold() == known.casefold():
            return known
        try:
            if float(name) == float(known):
                return known
        except ValueError:
            pass
    return None


def _spells_a_number(name: str) -> bool:
    """Whether a label spells a number (`0`, `1.0`, `-1`): a class code rather than a class name."""
    try:
        return math.isfinite(float(name))
    except ValueError:
        return False


# cleaning settings that remove text (the others only reshape it): what can leave a row empty
_REMOVERS = ("strip_urls", "strip_html", "remove_punctuation", "remove_digits")


def load_labeled(
    path: Path,
    scenario: ScenarioConfig,
    labels: list[str],
    *,
    unknown: str = "error",
    labels_of: str | None = None,
) -> tuple[LabeledTexts, int]:
    """Rows of one file; a label outside `labels` stops the run (or, with unknown='drop', is dropped).
    labels_of: whose labels they are when not the scenario config's (a published version, `spam v3`,
    scored on the file): the error then names them and asks for the file to be fixed."""
    columns = [scenario.text_column, scenario.label_column]
    # a published version's columns are its own: evaluate / export --validation take no scenario config
    fix = None
    if labels_of is not None:
        fix = f"{labels_of} reads columns {columns[0]!r} and {columns[1]!r}: rename the file's columns"
    table = read_table(path, columns, fix)
    label_to_id = {name: i for i, name in enumerate(labels)}
    texts: list[str] = []
    raw: list[str] = []
    ids: list[int] = []
    unknown_counts: Counter[str] = Counter()
    for row, (text, label) in enumerate(
        zip(table[scenario.text_column], table[scenario.label_column], strict=True)
    ):
        # JSON lines `NaN` (json.dumps' word for pandas' missing value) is an empty cell: a label column of
        # numbers kept it as a float, whose label "nan" was refused as unknown, or dropped as one
        text, label = (None if isinstance(v, float) and math.isnan(v) else v for v in (text, label))
        # a text of only whitespace is empty too: cleaning leaves nothing of it to train on
        if label is None or text is None or str(label).strip() == "" or str(text).strip() == "":
            empty_label = label is None or str(label).strip() == ""
            raise DataError(
                f"data file {path}, {_row_place(path, row)}: empty "
                f"{scenario.label_column if empty_label else scenario.text_column!r}"
            )
        for field, value in ((scenario.text_column, text), (scenario.label_column, label)):
            if isinstance(value, (list, dict)):  # JSON lines only: a cell that is an array or an object
                kind = "an array" if isinstance(value, list) else "an object"
                raise DataError(
                    f"data file {path}, {_row_place(path, row)}: {field!r} is {kind}, not a string"
                )
        name = label_text(label)
        if name not in label_to_id:
            if name == scenario.label_column and str(text).strip() == scenario.text_column:
                # `cat a.csv b.csv`: b's header mid-file, an unknown label 'label' to add or to drop
                raise DataError(
                    f"data file {path}, {_row_place(path, row)}: the header again (two files joined into "
                    "one?); remove the row"
                )
            unknown_counts[name] += 1
            continue
        if isinstance(text, bytes | bytearray):  # a Parquet text column stored as binary
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"data file {path}, {_row_place(path, row)}: {scenario.text_column!r} is bytes that "
                    f"are not UTF-8 text ({_bad_byte(exc)})"
                ) from None
        raw.append(str(text))
        texts.append(clean_text(raw[-1], scenario.cleaning))
        if not texts[-1].strip():  # a URL or markup alone: nothing is left to train on or to score
            # the removing settings the scenario has on (it named strip_urls, strip_html whatever emptied it:
            # ':)' emptied by remove_punctuation was blamed on them)
            on = [name for name in _REMOVERS if getattr(scenario.cleaning, name)]
            raise DataError(
                f"data file {path}, {_row_place(path, row)}: {scenario.text_column!r} is empty once "
                f"cleaned ({raw[-1][:80]!r}); remove the row, or turn off the scenario's `cleaning` "
                f"that empties it (on: {', '.join(on)})"
            )
        ids.append(label_to_id[name])
    if unknown_counts:
        first = next(iter(unknown_counts))
        # `Spam` for spam, `1.0` for 1: the file's spelling of a scenario label, not another class
        respelled = {name: known for name in unknown_counts if (known := _spelled_otherwise(name, labels))}
        if unknown == "error":
            found = (
                f"({len(unknown_counts)} unknown label(s), {sum(unknown_counts.values())} rows: "
                f"{sorted(unknown_counts)[:10]})"
            )
            if respelled:
                name, known = next(iter(respelled.items()))
                raise DataError(
                    f"data file {path}: label {name!r} in column {scenario.label_column!r} is "
                    f"{labels_of or 'the scenario'}'s label {known!r} written otherwise {found}; labels are "
                    f"matched exactly: write them as {labels_of or 'the scenario'} does"
                    + ("" if labels_of else " (a label added to `labels` would be another class)")
                )
            known = ", ".join(labels[:20]) + (f", … ({len(labels)} in all)" if len(labels) > 20 else "")
            if labels_of is not None:
                raise DataError(
                    f"data file {path}: label {first!r} in column {scenario.label_column!r} is not one of "
                    f"{labels_of}'s labels {found}; it knows {known}: fix the file's labels, or score it "
                    "with a version trained on them"
                )
            if all(map(_spells_a_number, unknown_counts)) and not any(map(_spells_a_number, labels)):
                # class codes (GLUE's 0/1): a code added to `labels` would be one more class beside the names
                raise DataError(
                    f"data file {path}: column {scenario.label_column!r} holds numbers "
                    f"({sorted(unknown_counts)[:10]}) where the scenario's labels are names ({known}); write "
                    "each row's label name (which class a number stands for is the dataset's to say)"
                )
            raise DataError(
                f"data file {path}: label {first!r} in column {scenario.label_column!r} is not in the "
                f"scenario's labels {found}; add it to `labels` in the scenario config"
            )
        log.warning(
            "%s: dropped %d rows whose label is not in the scenario: %s%s",
            path,
            sum(unknown_counts.values()),
            dict(unknown_counts),
            f"; written otherwise, these are the scenario's labels {respelled}: fix the file"
            if respelled
            else "",
        )
    if not texts:
        raise DataError(f"data file {path}: no rows left with a known label")
    return LabeledTexts(texts, ids, str(path), raw), sum(unknown_counts.values())


def grouped_split(
    label_ids: list[int], texts: Sequence[str], fraction: float, seed: int, max_rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """stratified_split over distinct texts: every row of a text lands on the same side, so a held-out
    row is never a copy of a kept one (the SMS spam file repeats messages: split row by row, 62 of the
    446 spam test rows had their text in train). A text's class is its first row's; `fraction` counts
    texts, which on these files is within a row or two of counting rows. max_rows: at most that many
    held-out rows, copies counted (a cap on texts held out SST-2's 2,000 texts as 2,010 rows)."""
    first: dict[str, int] = {}
    members: list[list[int]] = []
    group_labels: list[int] = []
    for i, text in enumerate(texts):
        j = first.setdefault(text, len(members))
        if j == len(members):
            members.append([])
            group_labels.append(label_ids[i])
        members[j].append(i)
    keep, held = stratified_split(group_labels, fraction, seed)
    sizes = np.asarray([len(members[j]) for j in held], dtype=int)
    if max_rows is not None and sizes.sum() > max_rows:
        # a text less for each row over (each has a row or more), class shares kept by stratified_cap
        n = max(len(held) - int(sizes.sum() - max_rows), 1)
        kept = stratified_cap([group_labels[j] for j in held], n, seed)
        if sizes[kept].sum() > max_rows:  # below one text per class stratified_cap keeps one of each
            order = kept
            if sizes[kept].min() > max_rows:  # none fits: the other held-out texts, fewest copies first
                rest = np.setdiff1d(np.arange(len(held)), kept)
                order = rest[np.argsort(sizes[rest], kind="stable")]
            fits, room = [], max_rows
            for k in order:
                if sizes[k] <= room:
                    fits.append(k)
                    room -= sizes[k]
            kept = np.asarray(fits, dtype=int)
        back = np.setdiff1d(np.arange(len(held)), kept)
        keep, held = np.concatenate([keep, held[back]]), held[kept]
    rows = [np.asarray([i for j in part for i in members[j]], dtype=int) for part in (keep, held)]
    return rows[0], rows[1]


def stratified_split(label_ids: list[int], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): about `fraction` of every class with >=2 rows is held out."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(label_ids)
    keep, held = [], []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_held = round(len(idx) * fraction) if len(idx) >= 2 else 0
        n_held = min(max(n_held, 1 if len(idx) >= 2 else 0), len(idx) - 1)
        held.extend(idx[:n_held])
        keep.extend(idx[n_held:])
    return rng.permutation(np.asarray(keep, dtype=int)), rng.permutation(np.asarray(held, dtype=int))


def stratified_cap(label_ids: list[int], n: int, seed: int) -> np.ndarray:
    """At most n indices, class shares kept, at least one row of every class present: when n is smaller
    than the number of classes, one row of each (more than n: prepare_data says so, naming the setting)."""
    if n >= len(label_ids):
        return np.arange(len(label_ids))
    _, sample = stratified_split(label_ids, n / len(label_ids), seed)
    labels = np.asarray(label_ids)
    present = set(labels[sample].tolist())
    # Rare classes can round to zero rows: add one of each so a capped run still sees every class.
    extra = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels) if c not in present]
    rows = np.concatenate([np.asarray(extra, dtype=int), sample])
    # The per-class minimum of one can overshoot n: drop rows from the end, as a plain cut would, but never
    # a class's last row (a plain cut lost a 2-row class for half the seeds). Where the cut kept every
    # class the rows are the same as before, so re-export recomputes the rows a recorded run validated on.
    excess = len(rows) - max(n, len(np.unique(labels)))
    counts = Counter(labels[rows].tolist())
    keep = np.ones(len(rows), dtype=bool)
    for i in range(len(rows) - 1, -1, -1):
        if excess <= 0:
            break
        cls = int(labels[rows[i]])
        if counts[cls] > 1:
            counts[cls] -= 1
            keep[i] = False
            excess -= 1
    return rows[keep]


def split_test(train: LabeledTexts, scenario: ScenarioConfig) -> tuple[LabeledTexts, LabeledTexts | None]:
    """(rest, test): the scenario's own test split, carved from its train file with a fixed seed.

    Stratified, `test_fraction` of the rows but at most `test_max_rows`; the same rows whatever the
    run's seed, budget or hyperparameters, so no run, comparison or tuning trial ever trains on them.
    Split by distinct cleaned text (grouped_split, SPLIT_VERSION 2): no test row is a copy of a train row.
    A split that would hold no row (test_max_rows below every held-out text's copies, or no class with 2
    distinct texts) is a DataError: the scenario asks for a test split, and a run would train without one.
    """
    if scenario.test_fraction <= 0:
        return train, None
    fraction = min(scenario.test_fraction, scenario.test_max_rows / len(train))
    keep, held = grouped_split(
        train.label_ids, train.texts, fraction, TEST_SPLIT_SEED, max_rows=scenario.test_max_rows
    )
    if len(held) == 0:
        # a scenario asking for a test split trained without one, and `evaluate --split test` scored no row
        _, candidates = grouped_split(train.label_ids, train.texts, fraction, TEST_SPLIT_SEED)
        fix = "or set test_fraction: 0 to train without a test split"
        if len(candidates) == 0:
            raise DataError(
                f"scenario {scenario.name!r}: no test split can be held out of {train.source}: no class has "
                "2 distinct texts (a text's copies are held out together, and one text of a class stays in "
                f"training); give more distinct texts, {fix}"
            )
        copies = Counter(train.texts)
        fewest = min(copies[train.texts[i]] for i in candidates)
        raise DataError(
            f"scenario {scenario.name!r}: test_max_rows {scenario.test_max_rows} holds no test row: every "
            f"text held out of {train.source} has more copies than that (a text's copies are held out "
            f"together; the fewest are {fewest}); raise test_max_rows to {fewest} or more, {fix}"
        )
    test = train.subset(
        np.sort(held), f"{train.source} (test split {len(held)} rows, seed {TEST_SPLIT_SEED})"
    )
    return train.subset(np.sort(keep)), test


def load_test_split(config: TrainConfig) -> LabeledTexts:
    """The held-out test rows of a run's scenario (what `labelwise evaluate --split test` scores)."""
    train, _ = load_labeled(config.train_path, config.scenario, config.scenario.labels, unknown="error")
    _, test = split_test(train, config.scenario)
    if test is None:
        raise DataError(
            f"scenario {config.scenario.name!r} holds out no test split (test_fraction is 0): "
            "pass a labeled file with --data instead"
        )
    return test


def rows_digest(rows: LabeledTexts, labels: Sequence[str]) -> str:
    """sha256 of a set of labeled rows, in any order: each row's text as the file holds it, with its label
    name. Two carvings of a split agree on it exactly when they hold the same rows."""
    texts = rows.raw if rows.raw is not None else rows.texts
    pairs = zip(texts, rows.label_ids, strict=True)
    lines = sorted(json.dumps([text, labels[i]], ensure_ascii=False) for text, i in pairs)
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def held_out_record(config: TrainConfig, data: PreparedData) -> dict[str, Any]:
    """What identifies the rows a run held out (its test split) and validated on: publish records it in the
    manifest's metrics (`held_out`), `labelwise evaluate --split` carves the rows again and checks them."""
    labels = data.labels
    return {
        "split_version": SPLIT_VERSION,
        "train_file_sha256": file_sha256(config.train_path),
        "test_rows": 0 if data.test is None else len(data.test),
        "test_sha256": None if data.test is None else rows_digest(data.test, labels),
        "validation_rows": len(data.validation),
        "validation_sha256": rows_digest(data.validation, labels),
    }


def held_out_changes(
    record: dict[str, Any], config: TrainConfig, split: str, rows: LabeledTexts
) -> str | None:
    """None when `split` rows read again today are the ones a run's held_out record names; else what
    changed since, in words (`labelwise evaluate --split` and `labelwise export` refuse them)."""
    if rows_digest(rows, config.scenario.labels) == record.get(f"{split}_sha256"):
        return None
    why = []
    if split == "validation" and config.validation_path is not None:
        # rows read from a validation file of their own: the train file and the split code play no part
        why.append(f"the rows of {config.validation_path} changed since")
    else:
        if record.get("split_version") != SPLIT_VERSION:
            why.append(f"split version {record.get('split_version')} then, {SPLIT_VERSION} in this code")
        same_file = config.train_path.is_file() and file_sha256(config.train_path) == record.get(
            "train_file_sha256"
        )
        if config.train_path.is_file() and not same_file:
            why.append(f"{config.train_path} changed since")
        elif same_file and record.get("split_version") == SPLIT_VERSION:
            # neither the file nor the split version: the code's other rules (test_max_rows caps held-out
            # rows, copies counted, since 8 December 2026; SST-2's 2,010 test rows are 2,000 now)
            why.append(f"this code carves other rows from the same {config.train_path}")
    if record.get(f"{split}_rows") != len(rows):
        why.append(f"{record.get(f'{split}_rows')} rows then, {len(rows)} now")
    return "; ".join(why) or "other rows"


def prepare_data(config: TrainConfig) -> PreparedData:
    """Load, clean, map, split and cap the data of a run; every bad input stops here, before training."""
    scenario = config.scenario
    labels = scenario.labels
    train, _ = load_labeled(config.train_path, scenario, labels, unknown="error")
    train, test = split_test(train, scenario)
    present = {labels[i] for i in set(train.label_ids)}
    if len(present) < 2:
        raise DataError(
            f"data file {config.train_path}: column {scenario.label_column!r} holds fewer than 2 classes "
            f"({sorted(present)}); a classifier needs at least 2"
        )
    absent = [name for name in labels if name not in present]
    if absent:
        log.warning("%s: labels with no train rows: %s", config.train_path, absent)
    dropped = 0
    if config.validation_path is not None:
        validation, dropped = load_labeled(
            config.validation_path, scenario, labels, unknown=scenario.unknown_validation_labels
        )
        is_split = False
    else:
        keep, held = grouped_split(train.label_ids, train.texts, scenario.validation_split, config.seed)
        validation = train.subset(held, f"{train.source} (held-out {scenario.validation_split:.0%})")
        train = train.subset(keep)
        is_split = True
    if len(validation) == 0:
        raise DataError(
            f"no validation rows for {scenario.name!r}: "
            + (
                f"{config.train_path} has too few rows per class to hold out {scenario.validation_split:.0%} "
                "(a class needs at least 2 rows, one of them left for training)"
                if is_split
                else f"{config.validation_path} has none with a known label"
            )
            + "; give more rows, or a validation file (--validation-data)"
        )
    if config.max_train_samples is not None:
        train = _capped(
            train, config.max_train_samples, "max_train_samples (--max-train-samples)", config.seed
        )
    validation = capped_validation(validation, config)
    if not is_split:
        # A split-off validation (grouped_split) and the test split hold no text train has; a validation
        # file may (ATIS: 44 of its 499 texts are train texts). Kept as given, both files being the
        # dataset's own, but said: the scores that choose the checkpoint count those rows as unseen. Counted
        # on the capped rows, the ones the run trains and validates on (the file's count overstated it).
        # Likewise the test split, held out of train but not of a validation file (ATIS: 8 of its texts).
        shared = (
            (train.texts, f"a train text of {config.train_path}; their scores are of texts seen in training"),
            (
                test.texts if test is not None else [],
                "a text of the held-out test split; the checkpoint is chosen on them, so the test score on "
                "those texts is not of unseen texts",
            ),
        )
        for texts, what in shared:
            other = set(texts)
            if repeated := sum(text in other for text in validation.texts):
                log.warning(
                    "%s: %d of %d validation rows repeat %s",
                    config.validation_path,
                    repeated,
                    len(validation),
                    what,
                )
    _warn_conflicting_labels(train, labels, config.train_path)
    return PreparedData(train, validation, list(labels), is_split, dropped, test)


def capped_validation(validation: LabeledTexts, config: TrainConfig) -> LabeledTexts:
    """A run's validation rows capped to its max_eval_samples (all of them without one), said as training
    says it; `labelwise export` reads the run's validation file again through this cap."""
    if config.max_eval_samples is None:
        return validation
    return _capped(validation, config.max_eval_samples, "max_eval_samples (--max-eval-samples)", config.seed)


def _capped(rows: LabeledTexts, n: int, setting: str, seed: int) -> LabeledTexts:
    """stratified_cap's rows, said when they are more than asked: a cap below the class count keeps one
    row of each class (the run sees every class), which silently trained or validated on more rows."""
    index = stratified_cap(rows.label_ids, n, seed)
    if len(index) > n:
        log.warning(
            "%s %d is below the %d classes of %s: kept %d rows, one of each class, so that the run sees "
            "every class",
            setting,
            n,
            len(set(rows.label_ids)),
            rows.source,
            len(index),
        )
    return rows.subset(index)


def _warn_conflicting_labels(train: LabeledTexts, labels: Sequence[str], path: Path) -> None:
    """Said, not refused: the same text trained under two labels (emotion's train file holds 30 such texts,
    SST-2's 3), which no model can get both right; the split keeps a text's copies on one side."""
    seen: dict[str, set[int]] = {}
    for text, label_id in zip(train.texts, train.label_ids, strict=True):
        seen.setdefault(text, set()).add(label_id)
    mixed = [(text, ids) for text, ids in seen.items() if len(ids) > 1]
    if mixed:
        text, ids = mixed[0]
        shown = text if len(text) <= 60 else text[:57] + "..."
        log.warning(
            "%s: %d texts are trained under more than one label (e.g. %r: %s); the model cannot get both "
            "right: fix their labels in the file",
            path,
            len(mixed),
            shown,
            ", ".join(sorted(labels[i] for i in ids)),
        )
