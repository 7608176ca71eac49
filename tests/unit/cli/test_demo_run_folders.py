"""The demo's training run folders go under var/, beside its repository (which `make clean` removes), not
into ./runs of whatever folder it was started from."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the training extra is not installed")
pytest.importorskip("optimum", reason="the export extra is not installed")


def test_the_demo_trains_into_demo_runs_beside_its_repository(
    tiny_roberta_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training
    from labelwise import demo
    from model_repository import ModelRepository

    real_train = training.train

    def on_the_tiny_base(config, **kwargs):  # type: ignore[no-untyped-def]
        # the demo's run as it configures it, on a tiny encoder instead of MiniLM, for a few steps
        return real_train(
            config.model_copy(update={"base_model": str(tiny_roberta_dir), "max_steps": 2}), **kwargs
        )

    monkeypatch.setattr(training, "train", on_the_tiny_base)
    monkeypatch.setattr(demo, "_log", lambda message: None)
    started_in = tmp_path / "checkout"
    started_in.mkdir()
    monkeypatch.chdir(started_in)
    repository = tmp_path / "var" / "demo-repository"
    demo.train_scenarios(repository, epochs=1)

    assert not (started_in / "runs").exists() and list(started_in.iterdir()) == []
    for name, (_labels, strategy) in demo.DEMO_SCENARIOS.items():
        (run,) = (tmp_path / "var" / "demo-runs" / name).glob(f"{strategy}-*")
        assert (run / "train_config.json").is_file() and (run / "metrics.json").is_file()
        assert ModelRepository(repository).resolve(name) == 1
