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
