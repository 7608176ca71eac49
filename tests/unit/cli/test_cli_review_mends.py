"""The CLI review's mends, each through the real `labelwise` command (and `python -m labelwise.demo`):

- an install without the training extra is told the pip command (exit 2), not shown a traceback, by
  train, compare, tune, robustness and results;
- `export-bench --data` that is missing or unreadable is one line, exit 2;
- a --repository that does not exist is refused the same way (exit 2, naming it) by every command that
  reads a repository, not reported as a scenario with no version there (exit 1);
- `results --scenarios` is checked before any cell trains;
- `robustness` reads a version that recorded no scenario config, or one an older release recorded;
- a flag the run would ignore (LoRA settings on full/frozen, --pgd-steps without pgd, publish-only flags
  when nothing is published) is refused before training; defaults never are;
- a bad LABELWISE_DEMO_PORT/LABELWISE_DEMO_EPOCHS is a usage error naming it, and --help still works;
- the help shows the defaults and variables doctor, promote and --output-dir use.

Training is stubbed where a refusal must come first: reaching it answers `error: reached training`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from labelwise.cli import app
from model_repository import EXIT_RUNTIME, EXIT_USAGE, LabelwiseError
from model_repository.passes import MAX_INTRA_OP_THREADS
from tests.conftest import write_rows, write_toy_csv

ROOT = Path(__file__).resolve().parents[3]
TRAINING_EXTRA = ("torch", "transformers", "datasets", "peft", "optuna", "sklearn", "matplotlib", "optimum")


def _invoke(*args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", **(env or {})})


def _one_error_line(result, *fragments: str, code: int = EXIT_USAGE) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: "), line
    for fragment in fragments:
        assert fragment in line, line
    return line


class _Reached(LabelwiseError):
    """What the stubbed training raises: the command got past every refusal."""

    exit_code = EXIT_RUNTIME


def _reached(*_args: object, **_kwargs: object) -> None:
    raise _Reached("reached training")


@pytest.fixture
def stub_training(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> SimpleNamespace:
    """train, compare_strategies and run_study stubbed (the commands import them when they run), and a
    small spam-labelled train file."""
    pytest.importorskip("torch", reason="the training extra is not installed")
    pytest.importorskip("transformers", reason="the training extra is not installed")
    import training
    import training.tuning

    monkeypatch.setattr(training, "train", _reached)
    monkeypatch.setattr(training, "compare_strategies", _reached)
    monkeypatch.setattr(training.tuning, "run_study", _reached)
    monkeypatch.delenv("LABELWISE_REPOSITORY", raising=False)
    rows = [(f"message number {i}", "spam" if i % 3 == 0 else "ham") for i in range(30)]
    data = write_rows(tmp_path / "train.csv", rows)
    common = ("-s", "spam", "--data", str(data), "-o", str(tmp_path / "run"))
    return SimpleNamespace(common=common, tmp=tmp_path)


# ---- 1. a missing training extra ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        "train -s spam --strategy lora --no-publish -o run",
        "compare -s spam -o run",
        "tune -s spam --strategy lora -n 1 -o run",
        "robustness -s spam --data in.csv -r repo",
        "results --scenarios spam --stages matrix --budgets 100 --out out --docs r.md",
    ],
    ids=lambda command: command.split()[0],
)
def test_an_install_without_the_training_extra_is_told_the_extra(
    command: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """As the Docker image (`.[serving,object-store]`): none of the training extra's modules import."""
    monkeypatch.chdir(tmp_path)  # the relative paths above land here
    (tmp_path / "repo").mkdir()
    write_rows(tmp_path / "in.csv", [("hello there", "ham")])
    for module in TRAINING_EXTRA:
        monkeypatch.setitem(sys.modules, module, None)  # import fails as when not installed
    line = _one_error_line(_invoke(*command.split()))
    assert line == "error: torch is not installed; run: pip install 'labelwise[training]'"


def test_tune_without_optuna_and_a_report_without_matplotlib_are_told_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)
    out = _invoke("tune", "-s", "spam", "--strategy", "lora", "-n", "1", "-o", str(tmp_path / "o"))
    _one_error_line(out, "optuna is not installed; run: pip install 'labelwise[training]'")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    out = _invoke("results", "--report-only", "--out", str(tmp_path / "o"), "--docs", str(tmp_path / "r.md"))
    _one_error_line(out, "matplotlib is not installed; run: pip install 'labelwise[training]'")


# ---- 2. export-bench --data ---------------------------------------------------------------------------


def test_export_bench_refuses_a_missing_or_unreadable_data_file(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="the serving extra is not installed")
    (tmp_path / "repo").mkdir()
    repo = ("-s", "spam", "-r", str(tmp_path / "repo"))
    missing = tmp_path / "absent.csv"
    _one_error_line(
        _invoke("export-bench", *repo, "--data", str(missing)), f"--data {missing} does not exist"
    )
    _one_error_line(
        _invoke("export-bench", *repo, "--data", str(tmp_path)), f"--data {tmp_path} is not a file"
    )
    binary = tmp_path / "latin1.csv"
    binary.write_bytes(b"text\ncaf\xe9 \xff\n")
    _one_error_line(_invoke("export-bench", *repo, "--data", str(binary)), str(binary), "UTF-8")


# ---- 3. a --repository that does not exist ------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["repo", "list"],
        ["repo", "show", "spam"],
        ["repo", "verify", "spam"],
        ["promote", "-s", "spam", "-v", "1"],
        ["evaluate", "-s", "spam", "--split", "test"],
        ["export", "-s", "spam"],
        ["export-bench", "-s", "spam", "--data", "in.csv"],
        ["robustness", "-s", "spam", "--data", "in.csv"],
    ],
    ids=" ".join,
)
def test_every_command_refuses_a_repository_that_does_not_exist_alike(
    args: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if args[0] in ("evaluate", "export", "robustness"):
        pytest.importorskip("torch", reason="the training extra is not installed")
    if args[0] == "export-bench":
        pytest.importorskip("onnxruntime", reason="the serving extra is not installed")
    monkeypatch.chdir(tmp_path)
    write_rows(tmp_path / "in.csv", [("hello there", "ham")])
    missing = tmp_path / "no-such-repository"
    out = _invoke(*args, "-r", str(missing))
    _one_error_line(out, f"--repository {missing} does not exist")
    assert not missing.exists()


# ---- 4. results --scenarios ---------------------------------------------------------------------------


def test_results_refuses_an_unknown_scenario_before_any_cell(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the training extra is not installed")
    # --time-budget-s 0: were the scenarios taken, the job would start and stop without a cell (exit 0)
    out = _invoke(
        "results", "--scenarios", "sentiment,spma", "--stages", "matrix", "--budgets", "100",
        "--time-budget-s", "0", "--out", str(tmp_path / "out"), "--docs", str(tmp_path / "r.md"),
    )  # fmt: skip
    _one_error_line(out, "--scenarios", "'spma'", "spam", "sentiment")
    assert not (tmp_path / "out").exists() and not (tmp_path / "r.md").exists()


# ---- 5. robustness of a version without a usable recorded scenario config -----------------------------


@pytest.fixture(scope="module")
def published(tiny_roberta_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A tiny full fine-tune (2 steps), published without ONNX graphs; and a labeled file."""
    pytest.importorskip("torch", reason="the training extra is not installed")
    from model_repository import ModelRepository
    from training import custom_scenario, make_train_config, train_and_publish

    labels = ("positive", "negative")
    root = tmp_path_factory.mktemp("robustness")
    write_toy_csv(root / "data" / "train.csv", 8, seed=1, labels=labels)
    write_toy_csv(root / "data" / "validation.csv", 3, seed=2, labels=labels)
    scenario = custom_scenario("toy_robust", list(labels), root / "data", max_length_tokens=24)
    config = make_train_config(
        scenario,
        "full",
        base_model=str(tiny_roberta_dir),
        output_dir=root / "run",
        batch_size=8,
        max_steps=2,
        early_stopping_patience=None,
    )
    train_and_publish(config, ModelRepository(root / "repo"), export_precisions=None)
    return SimpleNamespace(
        root=root / "repo", data=write_toy_csv(root / "eval.csv", 3, seed=3, labels=labels)
    )


def _retired(config: dict) -> None:
    config["scenario"]["retired_setting"] = True


@pytest.mark.parametrize(
    "change", [lambda config: config.pop("scenario"), _retired], ids=["none recorded", "older release"]
)
def test_robustness_reads_a_version_without_a_usable_scenario_config(
    published, change, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(published.root, repo)
    path = repo / "toy_robust" / "1" / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest["training_config"])
    path.write_text(json.dumps(manifest))
    out = _invoke("robustness", "-s", "toy_robust", "--data", str(published.data), "-r", str(repo))
    assert out.exit_code == 0, out.output
    assert '"n_rows": 6' in out.stdout and "toy_robust v1" in out.stdout


def test_robustness_takes_a_superscript_version_as_an_alias_name(published) -> None:
    # "²".isdigit() is true and int("²") raises: a traceback, where any other non-number is an alias name
    out = _invoke("robustness", "-s", "toy_robust", "--data", str(published.data), "-r", str(published.root),
                  "--version", "²")  # fmt: skip
    assert out.exit_code == 2, out.output
    assert "Traceback" not in out.output and "²" in out.stderr


# ---- 6. training flags the run would ignore -----------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "flags", "named"),
    [
        ("full", ["--lora-r", "4"], "--lora-r applies to the lora strategy only"),
        ("frozen", ["--lora-alpha", "8", "--lora-dropout", "0.1"], "--lora-alpha, --lora-dropout apply to"),
        ("full", ["--lora-target-modules", "query"], "--lora-target-modules applies to the lora strategy"),
        ("frozen", ["--lora-train-pooler"], "--lora-train-pooler applies to the lora strategy only"),
        ("full", ["--lora-frozen-pooler"], "--lora-frozen-pooler applies to the lora strategy only"),
        ("lora", ["--pgd-steps", "5"], "--pgd-steps is set but adversarial is none"),
        ("lora", ["--adversarial", "fgm", "--epsilon", "1", "--pgd-steps", "5"], "adversarial is fgm"),
    ],
)
def test_train_refuses_a_flag_its_strategy_would_ignore(
    stub_training, strategy: str, flags: list[str], named: str
) -> None:
    out = _invoke("train", *stub_training.common, "--strategy", strategy, "--no-publish", *flags)
    _one_error_line(out, named)


@pytest.mark.parametrize(
    ("strategy", "flags"),
    [
        ("full", []),  # the scenario's own LoRA defaults are never refused
        ("frozen", []),
        ("lora", ["--lora-r", "4", "--lora-frozen-pooler"]),
        ("lora", ["--adversarial", "pgd", "--epsilon", "1", "--pgd-steps", "5"]),
    ],
)
def test_train_takes_the_flags_its_strategy_uses(stub_training, strategy: str, flags: list[str]) -> None:
    out = _invoke("train", *stub_training.common, "--strategy", strategy, "--no-publish", *flags)
    _one_error_line(out, "reached training", code=EXIT_RUNTIME)


@pytest.mark.parametrize(
    ("flags", "named", "field"),
    [
        (["--epochs", "-1"], "--epochs: Input should be greater than 0", "num_train_epochs"),
        (
            ["--max-length", "0"],
            "--max-length: Input should be greater than or equal to 8",
            "max_length_tokens",
        ),
        (
            ["--class-weights", "bogus"],
            "--class-weights: Input should be 'auto', 'on' or 'off'",
            "class_weighting",
        ),
        (["--batch-size", "0"], "--batch-size: Input should be greater than or equal to 1", "batch_size"),
        (["--max-steps", "0"], "--max-steps: Input should be greater than or equal to 1", "max_steps"),
        (["--max-train-samples", "1"], "--max-train-samples: Input should be", "max_train_samples"),
        (["--early-stopping-patience", "-1"], "--early-stopping-patience: Input", "early_stopping_patience"),
        (["--base-model", " "], "--base-model: empty", "base_model"),
    ],
)
@pytest.mark.parametrize("command", ["train", "compare"])
def test_a_refused_training_value_names_the_flag_not_the_config_field(
    stub_training, monkeypatch: pytest.MonkeyPatch, command: str, flags: list[str], named: str, field: str
) -> None:
    """`--epochs -1` was refused as `num_train_epochs: ...`, a name the user never typed."""
    import training.evaluate

    # compare's own configs are made before it trains: its training is stubbed, not the comparison
    monkeypatch.setattr(training, "compare_strategies", training.evaluate.compare_strategies)
    monkeypatch.setattr(training.evaluate, "train", _reached)
    strategy = ["--strategy", "lora", "--no-publish"] if command == "train" else ["--strategies", "lora"]
    line = _one_error_line(_invoke(command, *stub_training.common, *strategy, *flags), named)
    assert field not in line


@pytest.mark.parametrize(
    ("flags", "named", "field"),
    [
        (["--learning-rate", "-1"], "--learning-rate: Input should be greater than 0", "learning_rate"),
        (["--lora-r", "0"], "--lora-r: Input should be greater than or equal to 1", "lora_r"),
        (["--lora-dropout", "2"], "--lora-dropout: Input should be less than 1", "lora_dropout"),
        (
            ["--adversarial", "fgm", "--epsilon", "-1"],
            "--epsilon: Input should be greater than 0",
            "adversarial_epsilon",
        ),
        (["--adversarial", "pgd", "--epsilon", "1", "--pgd-steps", "0"], "--pgd-steps: Input", "pgd_steps"),
    ],
)
def test_train_names_the_flag_of_each_refused_strategy_setting(
    stub_training, flags: list[str], named: str, field: str
) -> None:
    line = _one_error_line(
        _invoke("train", *stub_training.common, "--strategy", "lora", "--no-publish", *flags), named
    )
    assert field not in line


@pytest.mark.parametrize(
    ("flags", "named", "field"),
    [
        (["--max-length", "0"], "--max-length: Input should be greater than", "max_length_tokens"),
        (["--max-steps", "0"], "--max-steps: Input should be greater than or equal to 1", "max_steps"),
    ],
)
def test_tune_names_the_flag_of_a_refused_training_value(
    stub_training, monkeypatch: pytest.MonkeyPatch, flags: list[str], named: str, field: str
) -> None:
    """tune checks its training overrides once, before any trial, through the same make_train_config."""
    pytest.importorskip("optuna", reason="the training extra is not installed")
    import training.data
    import training.tuning.study

    # the study itself runs (its check comes first); reading the data is where a valid run would go on
    monkeypatch.setattr(training.tuning, "run_study", training.tuning.study.run_study)
    monkeypatch.setattr(training.data, "prepare_data", _reached)
    line = _one_error_line(
        _invoke("tune", *stub_training.common, "--strategy", "lora", "-n", "1", *flags), named
    )
    assert field not in line


# ---- 7. publish-only flags when nothing is published --------------------------------------------------


def test_publish_only_flags_are_refused_when_nothing_is_published(stub_training) -> None:
    pytest.importorskip("optuna", reason="the training extra is not installed")
    tmp, common = stub_training.tmp, stub_training.common
    out = _invoke(
        "train", *common, "--strategy", "lora", "--no-publish", "--alias", "production", "--export", "int8"
    )
    _one_error_line(out, "--alias/--export need a published version", "--no-publish")
    repo = str(tmp / "repo")  # beside the run folder (a run folder inside the repository is refused)
    out = _invoke("train", *common, "--strategy", "lora", "--no-publish", "-r", repo)
    _one_error_line(out, "--repository needs a published version")
    tune = ("tune", *common, "--strategy", "lora", "-n", "1")
    _one_error_line(_invoke(*tune, "--alias", "production"), "--alias needs --publish")
    _one_error_line(_invoke(*tune, "--export", "fp32"), "--export needs --publish")
    _one_error_line(_invoke(*tune, "-r", repo), "--repository needs --publish")
    out = _invoke("compare", *common, "--export", "fp32")
    _one_error_line(out, "--export needs --repository/-r")
    out = _invoke("compare", *common, "--export", "none")  # given, even as its default's value
    _one_error_line(out, "--export needs --repository/-r")


def test_defaults_and_the_repository_variable_are_not_refused(stub_training) -> None:
    pytest.importorskip("optuna", reason="the training extra is not installed")
    tmp, common = stub_training.tmp, stub_training.common
    repo = str(tmp / "repo")  # beside the run folder (a run folder inside the repository is refused)
    env = {"LABELWISE_REPOSITORY": repo}  # the Docker image sets it for every command
    for args in (
        ("train", *common, "--strategy", "lora", "--no-publish"),
        ("tune", *common, "--strategy", "lora", "-n", "1"),
        ("compare", *common),
        ("compare", *common, "-r", repo, "--export", "fp32"),
    ):
        _one_error_line(_invoke(*args, env=env), "reached training", code=EXIT_RUNTIME)


def test_an_unknown_precision_is_refused_naming_the_flag_it_was_typed_in(stub_training) -> None:
    """`error: unknown precision fp13` named no flag: train, compare and tune take precisions in --export,
    export in --precision (-p). Each refusal names the flag and what was typed, exit 2, before training."""
    pytest.importorskip("optuna", reason="the training extra is not installed")
    tmp, common = stub_training.tmp, stub_training.common
    (tmp / "repo").mkdir()
    repo = ("-r", str(tmp / "repo"))
    for args, named in (
        (("train", *common, "--strategy", "lora", *repo, "--export", "fp13"), "--export fp13: "),
        (("compare", *common, *repo, "--export", "fp32,fp13"), "--export fp32,fp13: "),
        (
            ("tune", *common, "--strategy", "lora", "-n", "1", "--publish", *repo, "--export", "fp13"),
            "--export fp13: ",
        ),
        (("export", "-s", "spam", *repo, "--precision", "fp13"), "--precision fp13: "),
        (("export", "-s", "spam", *repo, "-p", "int8,fp13"), "--precision int8,fp13: "),
    ):
        _one_error_line(_invoke(*args), named + "unknown precision fp13: choose from fp32, fp16, int8")


def test_an_empty_precision_list_is_refused_as_empty(stub_training) -> None:
    """`-p ""` said `--precision : unknown precision (none given)`: a flag, a blank and no precision named.
    `--export ""` stays the default export and `--export none` no export; a list of only commas is empty."""
    pytest.importorskip("optuna", reason="the training extra is not installed")
    tmp, common = stub_training.tmp, stub_training.common
    (tmp / "repo").mkdir()
    repo = ("-r", str(tmp / "repo"))
    for args, flag in (
        (("export", "-s", "spam", *repo, "-p", ""), "--precision"),
        (("export", "-s", "spam", *repo, "--precision", " , "), "--precision"),
        (("train", *common, "--strategy", "lora", *repo, "--export", ","), "--export"),
        (("compare", *common, *repo, "--export", " ,, "), "--export"),
        (("tune", *common, "--strategy", "lora", "-n", "1", "--publish", *repo, "--export", ","), "--export"),
    ):
        line = _one_error_line(
            _invoke(*args), f"error: {flag} is empty: give one or more of fp32, fp16, int8"
        )
        assert "unknown precision" not in line, line


# ---- 8. the demo's environment variables --------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "option"),
    [("LABELWISE_DEMO_PORT", "eighty", "--port"), ("LABELWISE_DEMO_EPOCHS", "two", "--epochs")],
)
def test_a_bad_demo_variable_is_a_usage_error_and_help_still_works(
    variable: str, value: str, option: str, tmp_path: Path
) -> None:
    env = {**os.environ, variable: value}
    command = [sys.executable, "-m", "labelwise.demo"]
    shown = subprocess.run(
        [*command, "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env
    )
    assert shown.returncode == 0, shown.stderr
    assert option in shown.stdout and variable in shown.stdout
    args = ["--repository", str(tmp_path / "r"), "--log-file", str(tmp_path / "demo.log")]
    done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "r").exists()
    assert option in done.stderr and variable in done.stderr and repr(value) in done.stderr


# ---- 9. help text -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (["doctor"], ["env var: LABELWISE_REPOSITORY", "./var/model-repository"]),
        (["promote"], ["env var: LABELWISE_REPOSITORY", "default ./var/model-repository"]),
        (["train"], ["LABELWISE_RUNS_DIR"]),
        (["compare"], ["LABELWISE_RUNS_DIR"]),
        (["evaluate"], ["LABELWISE_RUNS_DIR"]),
        (["tune"], ["LABELWISE_RUNS_DIR"]),
    ],
)
def test_help_shows_the_defaults_and_variables_an_option_uses(command: list[str], shown: list[str]) -> None:
    out = _invoke(*command, "--help")
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.replace("│", " ").split())
    for fragment in shown:
        assert fragment in text, (command, fragment)


def test_doctor_keeps_a_configs_repository_over_the_variable(tmp_path: Path) -> None:
    """LABELWISE_REPOSITORY fills the repository only where the config sets none (as `serve`): now that
    the option reads it, it must not override the config's."""
    pytest.importorskip("onnxruntime", reason="the serving extra is not installed")
    config = tmp_path / "serve.yaml"
    config.write_text(f"repository: {tmp_path}\n")
    env = {"LABELWISE_REPOSITORY": str(tmp_path / "no-such-repository")}
    out = _invoke("doctor", "--config", str(config), env=env)
    assert out.exit_code == 0, out.output
    assert "no-such-repository" not in out.output
    out = _invoke("doctor", env=env)  # no config: the variable is the repository
    assert out.exit_code == 2 and "no-such-repository does not exist" in out.output


def test_compare_trains_a_strategy_named_twice_once_and_evaluate_refuses_negative_threads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`compare --strategies full,full` trained both runs into one folder and listed two identical rows;
    `evaluate --threads -3` was taken."""
    pytest.importorskip("torch")
    import training

    asked: list[tuple[str, ...]] = []

    def stop(scenario: str, *, strategies: tuple[str, ...], **_: object) -> None:
        asked.append(strategies)
        raise _Reached("stop")

    monkeypatch.setattr(training, "compare_strategies", stop)
    _invoke("compare", "-s", "spam", "--strategies", "full,lora,full", "-o", str(tmp_path / "o"))
    assert asked == [("full", "lora")]
    refused = _invoke("evaluate", "-s", "spam", "--threads", "-3")
    assert (
        refused.exit_code == 2
        and "--threads" in refused.output
        and "greater than or equal to 0" in refused.output
    )


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["robustness", "-s", "spam", "--data", "in.csv", "--max-rows", "0"], "--max-rows"),
        (["robustness", "-s", "spam", "--data", "in.csv", "--max-rows", "-1"], "--max-rows"),
        (["export-bench", "-s", "spam", "--data", "in.csv", "--threads", "-1"], "--threads"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_a_count_below_its_range_is_refused_before_anything_runs(args: list[str], flag: str) -> None:
    """`robustness --max-rows 0` ended in argmax's traceback, `--max-rows -1` scored every row but the
    last; `export-bench --threads -1` was taken and printed as '-1 intra-op threads'."""
    out = _invoke(*args)
    assert out.exit_code == EXIT_USAGE, out.output
    assert "Traceback" not in out.output
    assert f"Invalid value for '{flag}'" in out.output and "greater than or equal to" in out.output


@pytest.mark.parametrize(
    "args",
    [
        ["classify", "-s", "spam", "--input", "in.csv", "--output", "out.jsonl"],
        ["evaluate", "-s", "spam"],
        ["export-bench", "-s", "spam", "--data", "in.csv"],
        ["bench"],
    ],
    ids=lambda value: value[0],
)
def test_more_onnx_runtime_threads_than_it_takes_are_refused_by_the_option(args: list[str]) -> None:
    """`classify --threads 99999999999` failed as ONNX Runtime's pybind TypeError when the version loaded,
    and 100,000 threads hung it: every --threads stops at MAX_INTRA_OP_THREADS before anything runs."""
    out = _invoke(*args, "--threads", str(MAX_INTRA_OP_THREADS + 1))
    assert out.exit_code == EXIT_USAGE, out.output
    assert "Traceback" not in out.output and "--threads" in out.output, out.output
    assert str(MAX_INTRA_OP_THREADS) in out.output, out.output


def test_a_serve_config_asking_more_onnx_runtime_threads_than_it_takes_is_refused() -> None:
    from serving.config import ServingConfig

    with pytest.raises(ValueError, match="ort_intra_op_threads"):
        ServingConfig(ort_intra_op_threads=MAX_INTRA_OP_THREADS + 1)
    assert (
        ServingConfig(ort_intra_op_threads=MAX_INTRA_OP_THREADS).ort_intra_op_threads == MAX_INTRA_OP_THREADS
    )


def test_robustness_says_its_result_on_one_line_when_piped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Piped or redirected, the summary was cut at 80 columns: '... 0.0% of' / 'predictions flipped'."""
    pytest.importorskip("torch", reason="the training extra is not installed")
    import training.tuning
    from training.tuning.perturb import PerturbationReport

    report = PerturbationReport(
        scenario="sentiment", version=12, data="in.csv", n_rows=3, seed=0, typo_rate=0.15, drop_rate=0.1,
        clean_accuracy=1.0, clean_macro_f1=1.0, perturbed_accuracy=0.5, perturbed_macro_f1=0.5,
        flipped_share=0.5,
    )  # fmt: skip
    monkeypatch.setattr(training.tuning, "robustness_of_published", lambda *args, **kwargs: report)
    (tmp_path / "repo").mkdir()
    args = ["robustness", "-s", "sentiment", "--data", str(tmp_path / "in.csv"), "-r", str(tmp_path / "repo")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    expected = "sentiment v12 (none): accuracy 1.0000 clean, 0.5000 perturbed; 50.0% of predictions flipped"
    assert result.stdout.splitlines()[-1] == expected


def test_bench_progress_lines_print_paths_with_brackets_as_typed(tmp_path: Path) -> None:
    """A bench's progress line names paths (--out-dir, server logs): Rich read `[...]` in them as markup,
    dropping `[prod]` and failing on `[/old]` with a MarkupError traceback."""
    import io

    from rich.console import Console

    from labelwise.cli.bench import _run_and_print

    def run(_options: object, say: Callable[[str], None]) -> dict[str, str]:
        say("labelwise: starting the server (log /runs[/old]/r[prod]/serve.log)")
        return {"json_path": str(tmp_path / "bench.json")}

    out = io.StringIO()
    _run_and_print(run, None, "bench", lambda report: "", True, Console(file=out, width=200))
    assert "[bench] labelwise: starting the server (log /runs[/old]/r[prod]/serve.log)" in out.getvalue()


def test_tune_prints_a_study_folder_holding_brackets_as_typed(
    stub_training, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tune's progress lines and its last lines name the study's folder: Rich read `[...]` in it as markup."""
    from types import SimpleNamespace

    import training.tuning

    pytest.importorskip("optuna", reason="the training extra is not installed")
    folder = stub_training.tmp / "runs[/old]" / "r[prod]"

    def study(*_args: object, say: Callable[[str], None], **_kwargs: object) -> SimpleNamespace:
        say(f"study 's' in {folder}: trial 0 [1/1]")
        return SimpleNamespace(
            study_name="s", trials=1, complete=1, pruned=0, failed=0, wall_time_s=1.0, best_trial=0,
            best_params={"lr": 0.001}, best_macro_f1=0.5, default_macro_f1=None, default_outside_space={},
            default_params={}, published_version=None, scenario="spam",
            best_config_path=folder / "best.yaml", output_dir=folder,
        )  # fmt: skip

    monkeypatch.setattr(training.tuning, "run_study", study)
    result = _invoke("tune", *stub_training.common, "--strategy", "lora", "-n", "1")
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # as one line, whatever the terminal's width
    assert f"study 's' in {folder}: trial 0 [1/1]" in said, result.output
    assert f"best config {folder / 'best.yaml'}; summary and plots in {folder};" in said, result.output
