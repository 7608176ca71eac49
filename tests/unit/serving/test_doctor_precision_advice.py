"""`labelwise doctor` says when a scenario will load another precision than the first one asked for."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from labelwise.cli import app
from model_repository import ModelRepository

ort = pytest.importorskip("onnxruntime")


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CPU precision order")
def test_doctor_names_the_export_that_adds_the_precision_asked_for(published_repo: ModelRepository) -> None:
    # The fixture's versions exported fp32 only; `precision: auto` on CPU asks for int8 first (on a GPU,
    # fp16 first: the case of a version trained on a CPU machine served by a GPU replica).
    result = CliRunner().invoke(app, ["doctor", "--repository", str(published_repo.root)])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "full_three: v1 full: fp32 (exported: fp32); not int8:" in output
    assert "`labelwise export -s full_three -v 1 -p int8` adds it as a new version" in output
