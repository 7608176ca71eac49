"""A publish that fails on the repository's file system (a file where a folder goes, a full disk) after the
run has trained keeps the trained weights under the run folder and says where, instead of losing them."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_repository import ModelRepository, RepositoryError

from .conftest import FAST


def test_a_publish_that_fails_on_disk_keeps_the_trained_weights(
    toy_scenario, tiny_roberta_dir: Path, tmp_path: Path
) -> None:
    from labelwise.training_runs import run_training
    from training import make_train_config

    root = tmp_path / "repo"
    root.mkdir()
    (root / "toy").write_text("a file where the scenario's folder goes")  # passes the early root check
    run = tmp_path / "run"
    config = make_train_config(
        toy_scenario, "full", base_model=str(tiny_roberta_dir), output_dir=run, **{**FAST, "max_steps": 2}
    )
    with pytest.raises(RepositoryError) as failed:
        run_training(config, ModelRepository(root), export="none")
    message = str(failed.value)
    assert message.startswith(f"publishing toy/full to {root} failed (FileExistsError: ")
    assert message.endswith(f"the trained weights are kept in {run / 'weights'}")
    assert any((run / "weights").iterdir())
    assert (root / "toy").is_file()  # nothing published


def test_a_publish_the_object_store_refuses_keeps_the_trained_weights(
    toy_scenario, tiny_roberta_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read-only credentials pass the store's opening check (a listing) and fail at the first write, as
    ObjectStoreError (not an OSError): the run is kept all the same."""
    import uuid

    fsspec = pytest.importorskip("fsspec")
    from labelwise.training_runs import run_training
    from model_repository import ObjectStoreRepository
    from training import make_train_config

    bucket = f"denied-{uuid.uuid4().hex[:12]}"
    memory = fsspec.filesystem("memory")
    memory.pipe_file(f"/{bucket}/.keep", b"")
    try:
        repo = ObjectStoreRepository(f"memory://{bucket}/repo", cache_dir=tmp_path / "cache")

        def access_denied(*args, **kwargs):
            raise PermissionError("AccessDenied: PutObject")

        for write in ("pipe_file", "put_file"):  # what a read-only credential meets on its first PUT
            monkeypatch.setattr(repo.store.fs, write, access_denied)
        run = tmp_path / "run"
        config = make_train_config(
            toy_scenario, "full", base_model=str(tiny_roberta_dir), output_dir=run, **{**FAST, "max_steps": 2}
        )
        with pytest.raises(RepositoryError) as failed:
            run_training(config, repo, export="none")
        message = str(failed.value)
        assert "access denied" in message.lower() or "AccessDenied" in message, message
        assert message.endswith(f"the trained weights are kept in {run / 'weights'}"), message
        assert any((run / "weights").iterdir())
        assert not memory.exists(f"/{bucket}/repo/toy")  # nothing published
    finally:
        memory.rm(f"/{bucket}", recursive=True)
