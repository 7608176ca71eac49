"""A repository with one tiny published scenario, for starting `labelwise serve` as a user would."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_repository import ModelRepository

SCENARIO = "topic_frozen"


@pytest.fixture(scope="module")
def one_scenario_repo(tiny_roberta_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    from tests.integration.published import publish

    repo = ModelRepository(tmp_path_factory.mktemp("serve-cli-repo"))
    publish(repo, SCENARIO, tiny_roberta_dir, tmp_path_factory.mktemp("serve-cli-runs"), seed=1)
    repo.set_alias(SCENARIO, "production", 1)
    return repo
