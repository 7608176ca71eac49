"""Bad data files found in review: each stops with a DataError that names the file, the row and the cause,
and a capped run keeps every class."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_rows
from training.config import ScenarioConfig
from training.data import load_labeled, stratified_cap
from training.errors import DataError

LABELS = ["pos", "neg"]
SCENARIO = ScenarioConfig(name="review", labels=LABELS)


def _load(path: Path) -> list[str]:
    rows, _ = load_labeled(path, SCENARIO, LABELS)
    return rows.texts


def test_a_jsonl_file_that_is_not_utf8_names_its_row_and_asks_for_utf8(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    lines = ['{"text": "hello", "label": "pos"}', '{"text": "bye", "label": "neg"}']
    path.write_bytes(("\n".join([*lines, '{"text": "caf\xe9", "label": "pos"}']) + "\n").encode("latin-1"))
    with pytest.raises(DataError, match=r"train\.jsonl, row 3: column 'text' is not UTF-8.*re-save"):
        _load(path)


def test_a_csv_file_that_is_not_utf8_says_so(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes("text,label\ncaf\xe9,pos\nbye,neg\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"train\.csv is not UTF-8 text \(byte 0xe9.*re-save it as UTF-8"):
        _load(path)


def test_a_file_that_is_not_utf8_is_one_error_not_datasets_log_lines_too(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes("text,label\ncaf\xe9,pos\nbye,neg\n".encode("latin-1"))
    with caplog.at_level("DEBUG"), pytest.raises(DataError, match="not UTF-8"):
        _load(path)
    assert not [r for r in caplog.records if r.name.startswith("datasets")], caplog.text
    assert "UnicodeDecodeError" not in capfd.readouterr().err


@pytest.mark.parametrize(("cell", "kind"), [('["a", "b"]', "an array"), ('{"a": 1}', "an object")])
@pytest.mark.parametrize("column", ["text", "label"])
def test_a_jsonl_cell_that_is_an_array_or_object_is_refused_not_trained_as_its_repr(
    tmp_path: Path, cell: str, kind: str, column: str
) -> None:
    path = tmp_path / "train.jsonl"
    rows = [{"text": '"hello"', "label": '"pos"'}, {"text": '"bye"', "label": '"neg"'}]
    rows[1][column] = cell
    path.write_text(
        "".join(f'{{"text": {r["text"]}, "label": {r["label"]}}}\n' for r in rows), encoding="utf-8"
    )
    with pytest.raises(DataError, match=rf"train\.jsonl, row 2: '{column}' is {kind}, not a string"):
        _load(path)


@pytest.mark.parametrize(
    ("name", "content", "where"),
    [
        ("train.jsonl", '{"text": "hi", "label": "pos"}\n\n"just a text"\n', "row 3: a string"),
        ("train.jsonl", '{"text": "hi", "label": "pos"}\n[1, 2]\n', "row 2: an array"),
        ("train.jsonl", "[1]\n", "element 1: a number"),  # read as a column 'text' lacking 'label'
        ("train.json", '[{"text": "hi", "label": "pos"}, "hello"]', "element 2: a string"),
    ],
)
def test_a_json_row_that_is_not_an_object_is_named_by_row(
    tmp_path: Path, name: str, content: str, where: str
) -> None:
    """The reader said "Column() changed from object to string in row 0", or that a lone `[1]` line lacked
    the 'label' column; the row that is not an object is named."""
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=rf"{re.escape(name)}, {where}, not a JSON object"):
        _load(path)


def test_a_csv_read_error_names_the_parser_cause(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text('text,label\n"hello,pos\nbye,neg\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.csv could not be read as csv: .*EOF inside string"):
        _load(path)


@pytest.mark.parametrize("name", ["train.csv", "train.tsv"])
def test_a_header_only_file_says_it_has_no_rows(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("text\tlabel\n" if name.endswith(".tsv") else "text,label\n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{name} has a header but no rows")):
        _load(path)


def test_row_numbers_count_lines_of_jsonl_and_rows_of_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text('{"text": "a", "label": "pos"}\n{"text": "", "label": "neg"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.jsonl, row 2: empty 'text'"):
        _load(jsonl)
    parquet = tmp_path / "train.parquet"
    pq.write_table(pa.table({"text": ["a", ""], "label": ["pos", "neg"]}), parquet)
    with pytest.raises(DataError, match=r"train\.parquet, row 2: empty 'text'"):
        _load(parquet)
    # A CSV's row is its line, the header being line 1.
    write_rows(tmp_path / "train.csv", [("a", "pos"), ("", "neg")])
    with pytest.raises(DataError, match=r"train\.csv, row 3: empty 'text'"):
        _load(tmp_path / "train.csv")


def test_row_numbers_count_the_blank_lines_and_quoted_line_breaks_the_readers_skip(tmp_path: Path) -> None:
    """The number was the reader's record count: past a blank line or a quoted text of several lines it
    named a row above the bad one (here row 5 for the CSV, row 3 for the JSONL)."""
    csv_file = tmp_path / "train.csv"
    # lines: header, hello, blank, a text over lines 4-6, blank, bye, the empty text on line 9
    csv_file.write_text('text,label\nhello,pos\n\n"one\ntwo\nthree",neg\n\nbye,pos\n,neg\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.csv, row 7 \(line 9\): empty 'text'"):
        _load(csv_file)  # as a spreadsheet shows it (a blank line is a row), and the line it starts on
    tsv = tmp_path / "train.tsv"
    tsv.write_text("text\tlabel\nhello\tpos\n\n  \nbye\tpos\n\tneg\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.tsv, row 6: empty 'text'"):
        _load(tsv)
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text(
        '{"text": "a", "label": "pos"}\n\n \n{"text": "b", "label": "neg"}\n{"text": "", "label": "neg"}\n',
        encoding="utf-8",
    )
    with pytest.raises(DataError, match=r"train\.jsonl, row 5: empty 'text'"):
        _load(jsonl)
    array = tmp_path / "train.json"  # an array's rows are its elements, whatever its lines
    array.write_text(
        '[\n{"text": "a", "label": "pos"},\n\n{"text": "", "label": "neg"}\n]\n', encoding="utf-8"
    )
    with pytest.raises(DataError, match=r"train\.json, element 2: empty 'text'"):
        _load(array)


def test_stratified_cap_keeps_every_class_for_every_seed() -> None:
    labels = [0] * 100 + [1] * 2 + [2] * 2
    for seed in range(40):
        index = stratified_cap(labels, 5, seed)
        assert len(index) == 5 and len(set(index.tolist())) == 5, seed
        assert {labels[i] for i in index} == {0, 1, 2}, seed
        np.testing.assert_array_equal(index, stratified_cap(labels, 5, seed))


def test_stratified_cap_below_the_number_of_classes_keeps_one_row_of_each() -> None:
    labels = [0] * 20 + [1] * 3 + [2] * 3 + [3] * 3
    for seed in range(10):
        index = stratified_cap(labels, 2, seed)
        assert sorted(labels[i] for i in index) == [0, 1, 2, 3], seed


@pytest.mark.parametrize("field", ["max_train_samples", "max_eval_samples"])
def test_a_cap_below_the_number_of_classes_says_it_kept_one_row_of_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, field: str
) -> None:
    """--max-train-samples 2 on 3 classes trained on 3 rows, saying nothing: stratified_cap keeps a row of
    each class, on purpose, and the run now says so, naming the flag and the rows kept."""
    from labelwise.training_runs import flag_of
    from training import custom_scenario, make_train_config, prepare_data

    caps, said = {field: 2}, f"{field} ({flag_of(field)}) 2 is below the 3 classes of "
    labels = ["pos", "neg", "neutral"]
    rows = [(f"{label} text {i}", label) for i in range(6) for label in labels]
    _scenario_files(tmp_path / "d", rows, [(f"other {text}", label) for text, label in rows])
    scenario = custom_scenario("caps", labels, tmp_path / "d")
    with caplog.at_level("WARNING", logger="training"):
        data = prepare_data(make_train_config(scenario, "full", output_dir=tmp_path / "r", **caps))
    capped = data.train if field == "max_train_samples" else data.validation
    assert len(capped) == 3 and sorted(capped.label_ids) == [0, 1, 2]
    warned = [r.getMessage() for r in caplog.records if "is below the" in r.getMessage()]
    assert len(warned) == 1 and said in warned[0], warned
    assert "kept 3 rows, one of each class" in warned[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="training"):
        prepare_data(make_train_config(scenario, "full", output_dir=tmp_path / "r", **{field: 3}))
    assert not [r for r in caplog.records if "is below the" in r.getMessage()]


def _scenario_files(folder: Path, train: list[tuple[str, str]], validation: list[tuple[str, str]]) -> None:
    write_rows(folder / "train.csv", train)
    write_rows(folder / "validation.csv", validation)


def test_validation_texts_seen_in_training_are_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A validation file's texts that train also holds stay (both files are the dataset's own), and the
    run says how many: the scores that choose the checkpoint count them as unseen."""
    from training import custom_scenario, make_train_config, prepare_data

    train = [(f"good {i}", "pos") for i in range(6)] + [(f"bad {i}", "neg") for i in range(6)]
    _scenario_files(tmp_path / "d", train, [("good 1", "pos"), ("bad 2", "neg"), ("new text", "neg")])
    config = make_train_config(
        custom_scenario("dup", LABELS, tmp_path / "d"), "full", output_dir=tmp_path / "r"
    )
    with caplog.at_level("WARNING", logger="training"):
        data = prepare_data(config)
    assert len(data.train) == 12 and len(data.validation) == 3
    said = [r.getMessage() for r in caplog.records if "repeat a train text" in r.getMessage()]
    assert len(said) == 1 and "2 of 3 validation rows" in said[0]


@pytest.mark.parametrize(
    ("caps", "said_rows"),
    [({"max_eval_samples": 4}, "of 4 validation rows"), ({"max_train_samples": 2}, "of 12 validation rows")],
)
def test_validation_texts_seen_in_training_are_counted_on_the_capped_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, caps: dict[str, int], said_rows: str
) -> None:
    """The count is of the rows the run validates on, against the rows it trains on: a capped run said
    "12 of 12 validation rows repeat a train text" while it validated on 4 of them, or trained on 2."""
    from training import custom_scenario, make_train_config, prepare_data

    train = [(f"good {i}", "pos") for i in range(6)] + [(f"bad {i}", "neg") for i in range(6)]
    _scenario_files(tmp_path / "d", train, train)
    config = make_train_config(
        custom_scenario("dup", LABELS, tmp_path / "d"), "full", output_dir=tmp_path / "r", **caps
    )
    with caplog.at_level("WARNING", logger="training"):
        data = prepare_data(config)
    said = [r.getMessage() for r in caplog.records if "repeat a train text" in r.getMessage()]
    seen = set(data.train.texts)
    repeated = sum(text in seen for text in data.validation.texts)
    assert len(said) == 1 and f": {repeated} {said_rows}" in said[0], said


def test_validation_texts_of_the_held_out_test_split_are_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The test split is carved from the train file, not from a validation file: a validation text that is
    also a test text (ATIS: 8) chooses the checkpoint, and the test score then counts it as unseen."""
    from training import custom_scenario, make_train_config, prepare_data

    train = [(f"good {i}", "pos") for i in range(20)] + [(f"bad {i}", "neg") for i in range(20)]
    _scenario_files(tmp_path / "d", train, [("new text", "pos"), ("other text", "neg")])
    scenario = custom_scenario("dup", LABELS, tmp_path / "d", test_fraction=0.25)
    with caplog.at_level("WARNING", logger="training"):
        data = prepare_data(make_train_config(scenario, "full", output_dir=tmp_path / "r"))
    assert data.test is not None and len(data.test) > 0
    quiet = [r for r in caplog.records if "held-out test split" in r.getMessage()]
    assert quiet == []  # no shared text, nothing said
    in_test = data.test.texts[:2]
    _scenario_files(tmp_path / "d", train, [(in_test[0], "pos"), (in_test[1], "neg"), ("new text", "neg")])
    caplog.clear()
    with caplog.at_level("WARNING", logger="training"):
        prepare_data(make_train_config(scenario, "full", output_dir=tmp_path / "r"))
    said = [r.getMessage() for r in caplog.records if "held-out test split" in r.getMessage()]
    assert len(said) == 1 and ": 2 of 3 validation rows repeat a text of the held-out test split" in said[0]


def test_texts_trained_under_two_labels_are_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Emotion's train file holds 30 texts under two labels, SST-2's 3: said, with one of them."""
    from training import custom_scenario, make_train_config, prepare_data

    train = [(f"good {i}", "pos") for i in range(6)] + [(f"bad {i}", "neg") for i in range(6)]
    _scenario_files(tmp_path / "d", train, [("new text", "pos"), ("other text", "neg")])
    scenario = custom_scenario("mixed", LABELS, tmp_path / "d")
    with caplog.at_level("WARNING", logger="training"):
        prepare_data(make_train_config(scenario, "full", output_dir=tmp_path / "r"))
    assert not [r for r in caplog.records if "more than one label" in r.getMessage()]
    _scenario_files(tmp_path / "d", [*train, ("good 3", "neg"), ("bad 4", "pos")], [("new text", "pos")])
    caplog.clear()
    with caplog.at_level("WARNING", logger="training"):
        prepare_data(make_train_config(scenario, "full", output_dir=tmp_path / "r"))
    said = [r.getMessage() for r in caplog.records if "more than one label" in r.getMessage()]
    assert len(said) == 1 and "2 texts are trained under more than one label" in said[0], said
    assert "'good 3': neg, pos" in said[0] or "'bad 4': neg, pos" in said[0], said


def test_a_file_rewritten_with_its_old_mtime_is_read_again(tmp_path: Path) -> None:
    """datasets keys its cache of a local file on path and mtime: a copy that keeps timestamps (cp -p,
    rsync -a) must still be read as it is now."""
    import os

    path = tmp_path / "m.csv"
    write_rows(path, [("old one", "pos"), ("old two", "neg")])
    os.utime(path, (1_577_836_800, 1_577_836_800))
    assert _load(path) == ["old one", "old two"]
    write_rows(path, [("new one", "pos"), ("new two", "neg"), ("new three", "pos")])
    os.utime(path, (1_577_836_800, 1_577_836_800))
    assert _load(path) == ["new one", "new two", "new three"]


def test_a_custom_scenario_folder_relative_to_here_is_read_from_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training import custom_scenario, make_train_config

    _scenario_files(tmp_path / "data" / "tickets", [("a", "pos"), ("b", "neg")], [("c", "pos"), ("d", "neg")])
    monkeypatch.chdir(tmp_path)
    config = make_train_config(custom_scenario("tickets", LABELS, "data/tickets"), "full", output_dir="run")
    assert config.train_path == tmp_path / "data" / "tickets" / "train.csv"
    assert config.validation_path == tmp_path / "data" / "tickets" / "validation.csv"


@pytest.mark.parametrize("first", ["label", "text"])
def test_a_row_with_more_cells_than_the_header_is_refused_not_cut(tmp_path: Path, first: str) -> None:
    """pandas cut the extra cells off with a warning: a text with an unquoted comma trained as its first
    part (label first), or its second part was taken for an unknown label (text first)."""
    path = tmp_path / "train.csv"
    rows = [("pos", "I loved it, really loved it"), ("neg", "awful")]
    cells = [f"{label},{text}" if first == "label" else f"{text},{label}" for label, text in rows]
    path.write_text(f"{first},{'text' if first == 'label' else 'label'}\n" + "\n".join(cells) + "\n")
    with pytest.raises(DataError, match=r"train\.csv, row 2: 3 cells where the header has 2; a text with a "
                                         r"comma in it must be quoted"):  # fmt: skip
        _load(path)
    quoted = [f'{label},"{text}"' for label, text in rows]
    path.write_text("label,text\n" + "\n".join(quoted) + "\n")
    assert _load(path) == ["I loved it, really loved it", "awful"]


def test_a_tsv_row_with_an_extra_tab_is_refused_and_trailing_delimiters_still_pass(tmp_path: Path) -> None:
    tsv = tmp_path / "train.tsv"
    tsv.write_text("label\ttext\npos\tgreat\tfilm\nneg\tbad\n")
    with pytest.raises(DataError, match=r"train\.tsv, row 2: 3 cells where the header has 2; a text with a "
                                         r"tab in it must be quoted \(or use a \.csv file"):  # fmt: skip
        _load(tsv)
    trailing = tmp_path / "trailing.csv"  # a delimiter ending every row: an empty last cell, as before
    trailing.write_text("text,label\ngreat film,pos,\nbad,neg,\n")
    assert _load(trailing) == ["great film", "bad"]


def test_a_parquet_text_column_stored_as_binary_is_decoded_not_trained_as_its_repr(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"text": pa.array([b"caf\xc3\xa9 ok", b"bad"]), "label": ["pos", "neg"]}), path)
    assert _load(path) == ["café ok", "bad"]
    pq.write_table(pa.table({"text": pa.array([b"fine", b"caf\xe9"]), "label": ["pos", "neg"]}), path)
    with pytest.raises(DataError, match=r"train\.parquet, row 2: 'text' is bytes that are not UTF-8 text "
                                         r"\(byte 0xe9"):  # fmt: skip
        _load(path)


def test_a_text_that_cleaning_empties_is_refused_by_row(tmp_path: Path) -> None:
    """A URL or a tag alone passes the blank-text check and was trained (and scored) as an empty text."""
    path = tmp_path / "train.csv"
    path.write_text("text,label\nhello there,pos\nhttp://spam.example.com/win,neg\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.csv, row 3: 'text' is empty once cleaned .*spam\.example"):
        _load(path)
    raw = ScenarioConfig(name="review", labels=LABELS, cleaning={"strip_urls": False})
    assert load_labeled(path, raw, LABELS)[0].texts == ["hello there", "http://spam.example.com/win"]


@pytest.mark.parametrize("labels", [["pos", " neg"], ["pos", "neg "], ["pos", ""], ["pos", "  "]])
def test_a_label_no_data_row_could_spell_is_refused_in_the_config(labels: list[str]) -> None:
    """Label cells are read stripped and an empty one is refused, so such a label could have no rows: the
    error said to add to `labels` the label the config already held."""
    with pytest.raises(ValueError, match="without leading or trailing spaces"):
        ScenarioConfig(name="review", labels=labels)


def test_evaluate_data_reads_a_version_without_a_recorded_normalization_raw_as_served(tmp_path: Path) -> None:
    """`labelwise evaluate --data` scores the torch model on rows.texts and the graphs on rows.raw, cleaned
    as serving cleans them: for a version published before text_normalization was recorded (served raw)
    the torch side read the default cleaning's texts, so the two scored different inputs."""
    from model_repository import Manifest
    from model_repository.text import TextNormalization
    from tests.conftest import manifest_fields
    from training import evaluation_rows

    path = tmp_path / "eval.csv"
    path.write_text('text,label\n"  <b>fine</b> see http://x.io/a",pos\nbad,neg\n', encoding="utf-8")
    fields = {**manifest_fields(), "labels": LABELS, "scenario": "review", "version": 1}
    recorded = {"scenario": {"name": "review", "labels": LABELS}}
    old = Manifest(**fields, training_config=recorded)
    assert old.text_normalization is None
    rows = evaluation_rows(old, path).rows
    assert rows.texts == rows.raw == ["  <b>fine</b> see http://x.io/a", "bad"]
    cleaned = TextNormalization(strip_urls=True, strip_html=True, normalize_whitespace=True)
    rows = evaluation_rows(
        Manifest(**fields, training_config=recorded, text_normalization=cleaned), path
    ).rows
    assert rows.texts == ["fine see", "bad"] and rows.raw[0] == "  <b>fine</b> see http://x.io/a"


def test_a_lone_surrogate_in_a_jsonl_file_is_named_by_row(tmp_path: Path) -> None:
    """A `\\ud83d` escape without its pair (an emoji cut in two by an export) made the JSON lines reader
    fail with "Trailing data", which said nothing of the cause."""
    path = tmp_path / "eval.jsonl"
    lines = [
        '{"text": "The film was great today.", "label": "pos"}',
        '{"text": "bad \\ud83d here", "label": "neg"}',
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"eval\.jsonl, row 2: a text holds a lone surrogate \(\\ud83d"):
        _load(path)


def test_a_lone_surrogate_in_a_json_array_is_named_by_element_not_dropped(tmp_path: Path) -> None:
    """The JSON array reader (pandas' ujson) dropped the `\\ud83d` from the text without a word: the row
    trained as "bad  here" where a JSON lines file with the same text is refused."""
    path = tmp_path / "eval.json"
    elements = [
        '{"text": "The film was great today.", "label": "pos"}',
        '{"text": "bad \\ud83d here", "label": "neg"}',
    ]
    path.write_text("[\n" + ",\n".join(elements) + "\n]\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"eval\.json, element 2: a text holds a lone surrogate \(\\ud83d"):
        _load(path)
    # a surrogate pair is one character (an emoji): kept
    path.write_text('[{"text": "fine \\ud83d\\ude00", "label": "pos"}, {"text": "bad", "label": "neg"}]')
    assert _load(path) == ["fine \U0001f600", "bad"]


def test_a_text_that_cleaning_empties_names_the_settings_that_are_on(tmp_path: Path) -> None:
    """':)' emptied by remove_punctuation was blamed on strip_urls and strip_html."""
    path = tmp_path / "train.csv"
    path.write_text("text,label\nhello there,pos\n:),neg\n", encoding="utf-8")
    scenario = ScenarioConfig(
        name="review", labels=LABELS, cleaning={"remove_punctuation": True, "strip_html": False}
    )
    with pytest.raises(
        DataError, match=r"row 3: .*empty once cleaned.*\(on: strip_urls, remove_punctuation\)$"
    ):
        load_labeled(path, scenario, LABELS)


@pytest.mark.parametrize("given", [[], ","])
def test_lora_target_modules_that_name_none_are_refused(given: list[str] | str) -> None:
    """`--lora-target-modules ,` (or `lora_target_modules: []`) trained the default targets without a word."""
    from labelwise.training_runs import train_overrides
    from training import ScenarioConfigError, make_train_config

    scenario = ScenarioConfig(name="review", labels=LABELS, train_file=str(Path("unused.csv").resolve()))
    # a YAML's empty list, or the command line's comma list of no names
    overrides = train_overrides(lora_target_modules=given) if isinstance(given, str) else {}
    overrides.setdefault("lora_target_modules", given)
    with pytest.raises(ScenarioConfigError, match=r"(?s)lora_target_modules.*at least 1"):
        make_train_config(scenario, "lora", output_dir="unused", **overrides)


@pytest.mark.parametrize(("cell", "known", "labels"), [("Pos", "pos", LABELS), ("1.0", "1", ["0", "1"])])
def test_a_label_written_otherwise_is_named_as_the_scenario_label_not_to_be_added(
    tmp_path: Path, cell: str, known: str, labels: list[str]
) -> None:
    """`Pos` for pos (or `1.0` for 1, as pandas writes a float column) is the file's spelling of a label:
    the error said "add it to `labels`", which would train it as another class."""
    path = tmp_path / "train.csv"
    write_rows(path, [("hello", labels[0]), ("bye", labels[1]), ("hi again", cell)])
    scenario = ScenarioConfig(name="review", labels=labels)
    with pytest.raises(
        DataError, match=rf"label '{re.escape(cell)}'.* the scenario's label '{known}' written"
    ) as err:
        load_labeled(path, scenario, labels)
    assert "add it to `labels`" not in str(err.value)


def test_a_dropped_validation_label_written_otherwise_is_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "validation.csv"
    write_rows(path, [("hello", "pos"), ("bye", "NEG"), ("what", "other")])
    with caplog.at_level("WARNING", logger="training"):
        rows, dropped = load_labeled(path, SCENARIO, LABELS, unknown="drop")
    assert rows.texts == ["hello"] and dropped == 2
    assert "the scenario's labels {'NEG': 'neg'}: fix the file" in caplog.text


@pytest.mark.parametrize("unknown", ["error", "drop"])
def test_a_jsonl_label_that_is_nan_is_an_empty_label_not_the_label_nan(tmp_path: Path, unknown: str) -> None:
    """json.dumps writes pandas' missing value as NaN: the row's label is empty, named as such by its row
    (it was the label "nan": refused as unknown, or a validation file dropped it as one)."""
    path = tmp_path / "validation.jsonl"
    path.write_text(
        '{"text": "hello", "label": 0}\n{"text": "bye", "label": 1}\n{"text": "what", "label": NaN}\n'
    )
    scenario = ScenarioConfig(name="review", labels=["0", "1"])
    with pytest.raises(DataError, match=r"validation\.jsonl, row 3: empty 'label'"):
        load_labeled(path, scenario, ["0", "1"], unknown=unknown)


@pytest.mark.parametrize(
    ("name", "content", "where"),
    [
        # a line past the reader's first block: it said "Trailing data at position 27", of that block
        (
            "train.jsonl",
            "".join(f'{{"text": "t{i}", "label": "pos"}}\n' for i in range(3000))
            + '{"text": "x" "label": "neg"}\n',
            "line 3001",
        ),
        # a file cut off in its last line
        ("train.jsonl", '{"text": "hello", "label": "pos"}\n{"text": "bye", "label": "ne', "line 2"),
        # an object written over lines is read; its broken line is named
        (
            "train.jsonl",
            '{\n "text": "hello",\n "label": "pos"\n}\n{\n "text": "bye"\n "label": "neg"\n}\n',
            "line 7",
        ),
        ("train.json", '[{"text": "hello", "label": "pos"},\n{"text": "bye", "label": "neg"}', "line 2"),
    ],
)
def test_a_json_file_that_does_not_parse_names_the_line(
    tmp_path: Path, name: str, content: str, where: str
) -> None:
    """The reader's words were a position in the block it was reading ("Trailing data at position 36"),
    naming no line; the first line that is not JSON is named, with json's words for what is wrong."""
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=rf"{re.escape(name)}, {where}(, column \d+)?: not valid JSON \("):
        _load(path)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_labels_that_are_numbers_where_the_scenario_names_its_labels_are_not_to_be_added(
    tmp_path: Path, suffix: str
) -> None:
    """A file labeled 0/1 (GLUE's SST-2, a Parquet column of class codes) for a scenario naming pos/neg: the
    error said "add it to `labels`", which trains 0 and 1 as two more classes beside pos and neg."""
    import pandas as pd

    path = tmp_path / f"train{suffix}"
    frame = pd.DataFrame({"text": ["hello", "bye", "hi again"], "label": [0, 1, 1]})
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    says = r"train\.\w+: column 'label' holds numbers \(\['0', '1'\]\) where the scenario's labels are names"
    with pytest.raises(DataError, match=says) as err:
        _load(path)
    assert "add it to `labels`" not in str(err.value)
    assert "pos, neg" in str(err.value)


@pytest.mark.parametrize("unknown", ["error", "drop"])
def test_a_csv_row_that_repeats_the_header_is_named_by_row(tmp_path: Path, unknown: str) -> None:
    """Two CSV files joined (`cat a.csv b.csv`) hold the header again mid-file: it was the label 'label', to
    be added to `labels` (a validation file dropped it as an unknown label), naming no row."""
    first = write_rows(tmp_path / "a.csv", [("hello", "pos"), ("bye", "neg")])
    second = write_rows(tmp_path / "b.csv", [("hi again", "pos")])
    path = tmp_path / "validation.csv"
    path.write_bytes(first.read_bytes() + second.read_bytes())
    with pytest.raises(DataError, match=r"validation\.csv, row 4: the header again \(two files joined"):
        load_labeled(path, SCENARIO, LABELS, unknown=unknown)


@pytest.mark.parametrize(
    ("header", "says"),
    [
        ("text, label", "columns are named otherwise in the file: rename ' label' to 'label' there"),
        ("Text,Label", "rename 'Text' to 'text' and 'Label' to 'label' there"),
    ],
)
def test_a_column_named_with_spaces_or_another_case_is_said_to_be_renamed(
    tmp_path: Path, header: str, says: str
) -> None:
    """`text, label` (a space after the comma) or `Text,Label`: the advice was to set text_column /
    label_column in the scenario config, a scenario of one's own for a packaged one, for a stray space."""
    path = tmp_path / "train.csv"
    path.write_text(f"{header}\nhello,pos\nbye,neg\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"train\.csv: missing column .*; .*{says}") as err:
        _load(path)
    assert "scenario config" not in str(err.value)
