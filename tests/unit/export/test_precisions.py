"""The precision table: one entry per manifest precision, and graphs built from the right source."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_repository import PRECISIONS
from training.export import RECIPES, UnknownPrecisionError, parse_precisions
from training.export.precisions import MULTI_ADAPTER_PRECISIONS, RAW, GraphBuilder, PrecisionRecipe


def test_every_manifest_precision_has_one_recipe_in_manifest_order() -> None:
    assert tuple(RECIPES) == PRECISIONS
    assert all(name == recipe.name for name, recipe in RECIPES.items())
    assert all(r.source == RAW or r.source in RECIPES for r in RECIPES.values())
    assert MULTI_ADAPTER_PRECISIONS == ("fp32", "fp16", "int8")


def test_parse_precisions_orders_dedupes_and_names_the_unknown() -> None:
    assert parse_precisions("int8, fp32,int8") == ["fp32", "int8"]
    assert parse_precisions(["FP16", "fp32"]) == ["fp32", "fp16"]
    with pytest.raises(UnknownPrecisionError, match="bf16"):
        parse_precisions("fp32,bf16")
    for nothing in ("", " , ", []):
        with pytest.raises(
            UnknownPrecisionError, match=r"^the precision list is empty: give one or more of fp32"
        ):
            parse_precisions(nothing)
    with pytest.raises(
        UnknownPrecisionError, match=r"^--precision is empty: give one or more of fp32, fp16, int8$"
    ):
        parse_precisions(",", flag="--precision")
    with pytest.raises(
        UnknownPrecisionError, match=r"^--export fp32, bf16: unknown precision bf16: choose from"
    ):
        parse_precisions("fp32, bf16", flag="--export")


def test_fp32_gate_fails_only_over_its_threshold() -> None:
    fp32, int8 = RECIPES["fp32"], RECIPES["int8"]
    assert fp32.exceeds(2e-3) and not fp32.exceeds(5e-4) and not fp32.exceeds(None)
    assert not int8.exceeds(1.0)  # int8 drift is reported, never a failure
    assert int8.drops_accuracy(-0.05) and not int8.drops_accuracy(-0.001) and not int8.drops_accuracy(None)
    assert RECIPES["int8"].providers() == ["CPUExecutionProvider"]


def test_graph_builder_builds_each_graph_once_from_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []

    def fake(name: str, source: str) -> PrecisionRecipe:
        def make(src: Path, config: object, out: Path) -> Path:
            calls.append((name, src.name))
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(name)
            return out

        return PrecisionRecipe(name, source, make, None, None, gpu_graph=False, multi_adapter=False)

    monkeypatch.setitem(RECIPES, "fp32", fake("fp32", RAW))
    monkeypatch.setitem(RECIPES, "int8", fake("int8", "fp32"))
    raw = tmp_path / "raw.onnx"
    raw.write_text("raw")
    builder = GraphBuilder(raw, None, tmp_path, "g.onnx")
    int8 = builder.build("int8")
    assert builder.build("fp32") == tmp_path / "fp32" / "g.onnx"
    assert int8 == tmp_path / "int8" / "g.onnx" and builder.build("int8") == int8
    assert calls == [("fp32", "raw.onnx"), ("int8", "g.onnx")]
    seeded = GraphBuilder(raw, None, tmp_path, "g.onnx", built={"fp32": raw})
    assert seeded.build("fp32") == raw
