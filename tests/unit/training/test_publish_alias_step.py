"""publish_run's alias step comes after the version is sealed: a failure there says the version exists
(and how to promote it), so that a retry does not publish the same run twice."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from labelwise.cli import app
from model_repository import ModelRepository, RepositoryError, layout


def test_a_torch_only_run_is_published_but_no_alias_is_pointed_at_it(full_run, tmp_path: Path) -> None:
    from training import publish_run

    repo = ModelRepository(tmp_path)
    with pytest.raises(RepositoryError) as caught:
        publish_run(full_run, repo, export_precisions=None, alias="production")
    said = str(caught.value)
    assert said.startswith("toy v1 was published; pointing production at it failed: toy v1 cannot be served")
    assert "`labelwise export --scenario toy --version 1`" in said
    assert repo.list_versions("toy") == [1] and repo.aliases("toy") == {}
    repo.verify("toy", 1)


def test_a_failed_alias_write_names_the_published_version_and_the_promote_that_retries(
    full_run, tmp_path: Path
) -> None:
    from training import publish_run

    pytest.importorskip("onnxruntime")
    repo = ModelRepository(tmp_path)
    aliases = repo.scenario_path("toy") / layout.ALIASES_DIR
    aliases.parent.mkdir()
    # The alias write fails with an OSError from the filesystem (as a full disk or a lost store would): a
    # dangling link where its folder goes, which no mkdir gets past (a plain file there is named first).
    aliases.symlink_to(tmp_path / "gone")
    with pytest.raises(RepositoryError) as caught:
        publish_run(full_run, repo, export_precisions=["fp32"], alias="production")
    said = str(caught.value)
    assert said.startswith("toy v1 was published; pointing production at it failed: FileExistsError"), said
    retry = "labelwise promote --scenario toy --version 1 --alias production"
    assert f"(run `{retry}` to retry)" in said
    assert isinstance(caught.value.__cause__, OSError)
    assert repo.list_versions("toy") == [1]
    aliases.unlink()
    result = CliRunner().invoke(app, [*retry.split()[1:], "-r", str(tmp_path)])
    assert result.exit_code == 0 and "toy: production -> 1 (new)" in result.output, result.output
    assert repo.aliases("toy") == {"production": 1}


@pytest.mark.parametrize("in_the_way", ["aliases-file", "alias-folder"])
def test_an_alias_that_cannot_be_written_is_refused_before_the_run_trains(
    toy_scenario, tiny_roberta_dir: Path, tmp_path: Path, in_the_way: str
) -> None:
    """`train --alias production` where the scenario's _aliases is a file (or production.json a folder)
    trained and published the run, then failed to point the alias: now nothing trains, as for a bad name."""
    from labelwise.training_runs import run_training
    from model_repository import UsageError
    from training import make_train_config

    repo = ModelRepository(tmp_path / "repo")
    aliases = repo.scenario_path("toy") / layout.ALIASES_DIR
    if in_the_way == "aliases-file":
        aliases.parent.mkdir(parents=True)
        aliases.write_text("x")
        blocking = f"{aliases} is a file, not a folder"
    else:
        (aliases / "production.json").mkdir(parents=True)
        blocking = f"alias file {aliases / 'production.json'} is a folder, not a file"
    config = make_train_config(
        toy_scenario, "frozen", base_model=str(tiny_roberta_dir), output_dir=tmp_path / "run"
    )
    with pytest.raises(UsageError) as caught:
        run_training(config, repo, export="fp32", alias="production")
    said = str(caught.value)
    assert said.startswith(f"--alias production: {blocking}") and said.endswith("; nothing was trained"), said
    assert not (tmp_path / "run").exists()
    assert repo.list_scenarios() == []


def test_a_tune_publishing_to_an_alias_that_cannot_be_written_runs_no_trial(
    toy_scenario, tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("optuna")
    from training.errors import TuningError
    from training.tuning import run_study

    repo = ModelRepository(tmp_path / "repo")
    aliases = repo.scenario_path("toy") / layout.ALIASES_DIR
    aliases.parent.mkdir(parents=True)
    aliases.write_text("x")
    with pytest.raises(
        TuningError, match=r"^--alias production: .* is a file, not a folder.*; no trial was run$"
    ):
        run_study(
            toy_scenario,
            "frozen",
            trials=1,
            base_model=str(tiny_roberta_dir),
            output_dir=tmp_path / "study",
            publish=True,
            repository=repo,
            export_precisions=["fp32"],
            alias="production",
        )
    assert not (tmp_path / "study").exists()
