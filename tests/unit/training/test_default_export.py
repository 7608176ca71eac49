"""The default export follows the machine: fp16 joins fp32 and int8 where torch sees a CUDA GPU."""

from __future__ import annotations

import pytest
import torch

from labelwise.training_runs import default_export, export_precisions
from training.publish import requested_precisions


@pytest.mark.parametrize(("cuda", "expected"), [(False, ["fp32", "int8"]), (True, ["fp32", "int8", "fp16"])])
def test_default_export_adds_fp16_on_a_gpu_machine(
    monkeypatch: pytest.MonkeyPatch, cuda: bool, expected: list[str]
) -> None:
    # A GPU replica (values-gpu: precision fp16) loads fp16; without it, it serves fp32 with one log line.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert default_export() == ",".join(expected)
    assert set(export_precisions(None)) == set(expected)  # `labelwise train` without --export
    assert set(requested_precisions("auto")) == set(expected)  # training.train_and_publish's default
    assert export_precisions("fp32") == ["fp32"]  # an explicit choice stays as given
    # blanks are no choice: the default, as '' is (" " published a version holding no graph at all)
    assert export_precisions(" ") == export_precisions("") == export_precisions(None)
