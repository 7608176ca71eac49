"""A version holding only GPU graphs (fp16) is one every CPU replica refuses (they load int8, then fp32):
promote, and publish's --alias through serving_problem, refuse it by name and say how to add CPU graphs."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from labelwise.catalog import promote
from labelwise.cli import app
from model_repository import (
    EXIT_RUNTIME,
    BaseEncoderRef,
    ExportRecord,
    HeadSpec,
    Manifest,
    ModelRepository,
    RepositoryError,
    layout,
)
from model_repository.repository import serving_problem
from tests.conftest import manifest_fields

FIELDS = manifest_fields()


def _publish_graphs(repo: ModelRepository, scenario: str, precisions: tuple[str, ...]) -> int:
    """A version with ONNX graphs of its own in these precisions (fake bytes: promote opens none)."""
    with repo.new_version(scenario, **FIELDS) as draft:
        (draft.path / layout.ONNX_DIR).mkdir()
        records = []
        for precision in precisions:
            (draft.path / layout.graph_file(precision)).write_bytes(precision.encode())
            records.append(ExportRecord(precision=precision, path=layout.graph_file(precision), size_bytes=4))
        draft.fields["exports"] = records
    return draft.version


def test_promote_refuses_a_version_with_fp16_graphs_only(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    good = _publish_graphs(repo, "spam", ("fp32", "fp16"))
    assert promote(repo, "spam", good, "production") is None
    gpu_only = _publish_graphs(repo, "spam", ("fp16",))
    with pytest.raises(RepositoryError) as refused:
        promote(repo, "spam", gpu_only, "production")
    message = str(refused.value)
    assert message.startswith(f"not pointing spam production at v{gpu_only}: spam v{gpu_only} cannot be")
    assert "only GPU graphs (fp16)" in message and "CPU replicas load int8 or fp32" in message
    assert f"`labelwise export --scenario spam --version {gpu_only} -p fp32,int8`" in message
    assert repo.aliases("spam") == {"production": good}  # untouched
    result = CliRunner().invoke(app, ["promote", "-s", "spam", "-v", str(gpu_only), "-r", str(tmp_path)])
    assert result.exit_code == EXIT_RUNTIME and "only GPU graphs (fp16)" in result.stderr


def _manifest(**fields) -> Manifest:
    return Manifest(scenario="spam", version=3, **{**FIELDS, **fields})


def test_serving_problem_needs_a_cpu_graph_of_every_kind() -> None:
    sha = {"sha256": "0" * 64, "size_bytes": 1}
    head = HeadSpec(kind="linear", path=layout.HEAD_FILE)
    fp16 = ExportRecord(precision="fp16", path=layout.graph_file("fp16"), size_bytes=1)
    int8 = ExportRecord(precision="int8", path=layout.graph_file("int8"), size_bytes=1)
    assert "only GPU graphs (fp16)" in str(serving_problem(_manifest(exports=[fp16])))
    assert serving_problem(_manifest(exports=[fp16, int8])) is None
    # frozen: its head on a base encoder exported in fp16 alone
    gpu_base = BaseEncoderRef(key="mini-aaa", precisions=["fp16"])
    frozen = dict(strategy="frozen", head=head)
    assert "only GPU graphs (fp16)" in str(serving_problem(_manifest(**frozen, base_encoder=gpu_base)))
    cpu_base = BaseEncoderRef(key="mini-aaa", precisions=["fp16", "fp32"])
    assert serving_problem(_manifest(**frozen, base_encoder=cpu_base)) is None
    # lora_mode shared serves the precisions a version exported: fp16 alone is no CPU graph there either
    lora = dict(strategy="lora", head=head, base_encoder=cpu_base, files={layout.LORA_FILE: sha})
    assert "only GPU graphs (fp16)" in str(serving_problem(_manifest(**lora, exports=[fp16])))
    assert serving_problem(_manifest(**lora)) is None  # no export recorded: any shared graph


def test_the_cpu_precisions_are_the_exports_non_gpu_graphs() -> None:
    pytest.importorskip("onnx")
    from model_repository.repository import CPU_PRECISIONS
    from training.export.precisions import CPU_PRECISIONS as EXPORTED_CPU

    assert set(CPU_PRECISIONS) == set(EXPORTED_CPU)
