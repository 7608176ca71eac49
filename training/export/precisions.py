"""Every export precision in one table: how its graph is built, and how far it may drift from torch.

Version graphs (exporter.py), shared base encoders (base_encoder.py), re-exports (reexport.py) and
the multi-adapter graph (training.multi_adapter) all build and check precisions from `RECIPES`;
adding a precision is one entry here (and its name in model_repository's PRECISIONS, which a
test keeps equal to these keys).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UnknownPrecisionError
from . import graphs

_LOG = logging.getLogger(__name__)
RAW = "raw"  # the source name of the unoptimised graph the exporter wrote


@dataclass(frozen=True)
class PrecisionRecipe:
    """One precision: the graph it is built from, the build step, and its parity rules."""

    name: str
    source: str  # RAW or the precision whose graph this one is built from
    make: Callable[[Path, Any, Path], Path]  # (source graph, HF config, output path) -> output path
    max_abs_diff: float | None  # over this |Δ| against torch nothing is published; None: reported only
    max_accuracy_drop: float | None  # over this accuracy drop the export warns; None: not checked
    # A GPU graph (fp16): checked on the CUDA provider where this machine has one, else on the CPU
    # provider, which runs the same fp16 graph slowly but computes the same numbers to fp16 rounding.
    gpu_graph: bool
    multi_adapter: bool  # the shared multi-adapter LoRA graph is exported in this precision

    def exceeds(self, max_abs_diff: float | None) -> bool:
        """Whether a measured max |Δ| against torch fails this precision's parity gate."""
        return self.max_abs_diff is not None and max_abs_diff is not None and max_abs_diff > self.max_abs_diff

    def drops_accuracy(self, accuracy_delta: float | None) -> bool:
        """Whether the accuracy change against torch is a drop worth a warning."""
        return (
            self.max_accuracy_drop is not None
            and accuracy_delta is not None
            and accuracy_delta < -self.max_accuracy_drop
        )

    def providers(self) -> list[str]:
        """ONNX Runtime providers to verify parity on: CUDA first for a GPU graph when present."""
        if not self.gpu_graph:
            return ["CPUExecutionProvider"]
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]


# What optimum's ORTOptimizer raises for a model type it has no fusions for (data2vec-text, for one):
# NotImplementedError from ORTOptimizer / check_optimization_supported_model, KeyError from
# ORTConfigManager.check_supported_model.
UNOPTIMISABLE = (NotImplementedError, KeyError)


def _optimize_fp32(source: Path, config: Any, out: Path) -> Path:
    """ORT's fusions; for a model type ORT cannot optimise, the unoptimised graph itself (correct, only
    slower): the parity gate still checks it against torch."""
    try:
        return graphs.optimize_graph(source, config, out)
    except UNOPTIMISABLE as exc:
        _LOG.warning(
            "fp32: ORT cannot optimise model type %r (%s: %s); keeping the unoptimised graph",
            getattr(config, "model_type", None),
            type(exc).__name__,
            exc,
        )
        return source


def _optimize_fp16(source: Path, config: Any, out: Path) -> Path:
    """ORT's fusions and fp16 conversion; where they fail (a model type ORT cannot optimise, or the
    multi-adapter graph, whose gathered projections ORT cannot fuse), the unfused graph converted to fp16,
    whose drift the parity check reports as for any fp16 graph."""
    try:
        return graphs.optimize_graph(source, config, out, fp16=True)
    except Exception as exc:
        _LOG.warning(
            "fp16: ORT fusions failed for model type %r (%s: %s); converting the unfused graph",
            getattr(config, "model_type", None),
            type(exc).__name__,
            exc,
        )
        return graphs.convert_fp16(source, out)


def _quantize_int8(source: Path, config: Any, out: Path) -> Path:
    return graphs.quantize_int8(source, out)


RECIPES: dict[str, PrecisionRecipe] = {
    "fp32": PrecisionRecipe(
        "fp32", RAW, _optimize_fp32, max_abs_diff=1e-3, max_accuracy_drop=None, gpu_graph=False,
        multi_adapter=True,
    ),
    # fp16 drift is reported (max |Δlogit| and label agreement vs fp32), an accuracy drop warns.
    "fp16": PrecisionRecipe(
        "fp16", RAW, _optimize_fp16, max_abs_diff=None, max_accuracy_drop=0.01, gpu_graph=True,
        multi_adapter=True,
    ),
    "int8": PrecisionRecipe(
        "int8", "fp32", _quantize_int8, max_abs_diff=None, max_accuracy_drop=0.01, gpu_graph=False,
        multi_adapter=True,
    ),
}  # fmt: skip
MULTI_ADAPTER_PRECISIONS = tuple(name for name, recipe in RECIPES.items() if recipe.multi_adapter)


# What a CPU replica loads (serving's precision_order: int8, then fp32); every version holds one of them.
CPU_PRECISIONS = tuple(name for name, recipe in RECIPES.items() if not recipe.gpu_graph)


def parse_precisions(precisions: str | Sequence[str], announce: bool = True, flag: str = "") -> list[str]:
    """'fp32,int8' or ['fp32', 'int8'] -> a de-duplicated list in a fixed order; unknown names, or none,
    raise, naming `flag` (the option the value was typed in) and what was typed when given.

    GPU graphs alone (`fp16`) get fp32 too, and say so (announce=False: a check of the names before the
    work is known to happen, which says nothing): a version holding no CPU graph is one no CPU replica
    can load (they try int8, then fp32), and the repository refuses to promote it. This is the one place
    the precisions of a training export (`--export`) and of a re-export (`-p`) are decided."""
    items = precisions.split(",") if isinstance(precisions, str) else list(precisions)
    wanted = [p.strip().lower() for p in items if p and p.strip()]
    if not wanted:  # `-p ""` or `--export ,`: said as "unknown precision (none given)"
        raise UnknownPrecisionError(
            f"{flag or 'the precision list'} is empty: give one or more of {', '.join(RECIPES)}"
        )
    unknown = sorted(set(wanted) - set(RECIPES))
    if unknown:
        typed = f"{flag} {','.join(items)}: " if flag else ""
        raise UnknownPrecisionError(
            f"{typed}unknown precision {', '.join(unknown)}: choose from {', '.join(RECIPES)}"
        )
    if not any(p in CPU_PRECISIONS for p in wanted):
        if announce:  # a warning: it is what the caller did not ask for, and shows where no logging is set up
            _LOG.warning(
                "%s is a GPU graph: exporting fp32 too, so that CPU replicas (int8, then fp32) can load the "
                "version and GPU replicas have their fp32 fallback",
                ", ".join(p for p in RECIPES if p in wanted),
            )
        wanted.append("fp32")
    return [p for p in RECIPES if p in wanted]


class GraphBuilder:
    """Builds each precision's graph from one raw export, each graph once, under a work folder.

    `built` seeds graphs made another way (the multi-adapter graph keeps its raw fp32 graph when
    ORT's fusions fail).
    """

    def __init__(
        self, raw: Path, config: Any, work: Path, filename: str, built: dict[str, Path] | None = None
    ) -> None:
        self.config = config
        self.work = work
        self.filename = filename
        self._graphs: dict[str, Path] = {RAW: raw, **(built or {})}

    def build(self, precision: str) -> Path:
        """The graph of one precision, building the graph it derives from first."""
        if precision not in self._graphs:
            recipe = RECIPES[precision]
            source = self.build(recipe.source)
            self._graphs[precision] = recipe.make(source, self.config, self.work / precision / self.filename)
        return self._graphs[precision]


__all__ = [
    "CPU_PRECISIONS",
    "MULTI_ADAPTER_PRECISIONS",
    "RECIPES",
    "GraphBuilder",
    "PrecisionRecipe",
    "parse_precisions",
]
