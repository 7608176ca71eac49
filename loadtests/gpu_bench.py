"""`make gpu-bench`: one device script, one table: fp16 seq/s in-process and over HTTP vs the physical bound.

On a single-GPU machine with Python, torch and the project's wheels (no model hub: the encoder is a
distilroberta-base-shaped RoBERTa with random weights, which runs exactly as fast as the trained one):

1. builds the model and publishes it through the project's export (`training.export.export_into`:
   fp32 gate, fp16 graph, parity on the CUDA provider);
2. measures in-process seq/s at L = 32/64/128 tokens and B = 1..512 rows per pass: serving's
   `OnnxGraph` (IO binding) on the CUDA provider where onnxruntime-gpu is installed, else torch fp16
   with SDPA attention as the reference;
3. measures the same model through HTTP (`labelwise serve` on 127.0.0.1 and the closed-loop load
   generator) when Ray Serve and the CUDA provider are there;
4. measures matmul TFLOP/s on the device and prints each figure's ratio to the physical bound
   (measured TFLOP/s / FLOPs per sequence);
5. LoRA mix: 32 random rank-8 adapters on the same base in the shared multi-adapter graph
   (`training.multi_adapter`, published into the repository, fed by serving's `SharedAdapterGraph`);
   seq/s of a batch whose rows are a uniform mix of the 32 vs the same batch all on one adapter,
   at L = 64, and the ratio beside its target (>= 0.9). Where only torch sees the GPU, the traced
   torch module runs the same tables as the reference.

`--dry-run` (`make gpu-bench DRY_RUN=1`): a tiny model on the CPU provider in fp32, short timings;
the same steps and the same table, so the script is tested where there is no GPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_repository.errors import LabelwiseError
from model_repository.layout import why_not_a_folder

from .errors import BenchError, LoadTestOptionError

LENGTHS = (32, 64, 128)
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
LABELS = ["a", "b", "c"]
SCENARIO = "gpu-bench"
CUDA = "CUDAExecutionProvider"
LORA_ADAPTERS = 32
LORA_RANK = 8
LORA_LENGTH = 64
LORA_BATCH_SIZES = (64, 256)
DRY_RUN_LORA_BATCH_SIZES = (8, 32)
LORA_TARGET = 0.9  # issue 19: 32 LoRA scenarios mixed in one batch >= 0.9x one scenario


@dataclass(frozen=True)
class ModelShape:
    """An encoder's shape: what its FLOPs, and so the physical bound, depend on."""

    name: str
    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab: int

    def flops_per_sequence(self, length: int) -> float:
        """Multiply-adds x 2 of one sequence of `length` tokens through the encoder and the head."""
        h, i, n = self.hidden, self.intermediate, length
        per_layer = 8 * n * h * h + 4 * n * h * i + 4 * n * n * h  # QKVO, FFN, scores and AV
        head = 2 * h * h + 2 * h * len(LABELS)  # dense + out_proj on the first token
        return float(self.layers * per_layer + head)


DISTILROBERTA = ModelShape("distilroberta-base (random weights)", 6, 768, 12, 3072, 50265)
TINY = ModelShape("tiny RoBERTa (dry run)", 2, 32, 2, 64, 1000)


@dataclass
class Plan:
    """What one run measures and for how long."""

    dry_run: bool
    out_dir: Path
    lengths: tuple[int, ...] = LENGTHS
    batch_sizes: tuple[int, ...] = BATCH_SIZES
    seconds_per_cell: float = 0.6
    http: bool = True
    http_duration_s: float = 8.0
    http_concurrency: int = 32
    http_texts_per_request: int = 32
    port: int = 8131
    threads: int = 0
    lora: bool = True
    lora_adapters: int = LORA_ADAPTERS
    lora_length: int = LORA_LENGTH
    lora_batch_sizes: tuple[int, ...] = LORA_BATCH_SIZES
    lora_rounds: int = 3  # mixed and one-adapter alternate round by round; the best round counts
    backend: str = "auto"  # "torch": the torch reference even where ORT's CUDA provider is there

    @property
    def shape(self) -> ModelShape:
        return TINY if self.dry_run else DISTILROBERTA


@dataclass
class Row:
    path: str  # "in-process" or "HTTP"
    length: int
    batch: str
    seq_per_s: float
    bound_seq_per_s: float

    @property
    def ratio(self) -> float:
        return self.seq_per_s / self.bound_seq_per_s if self.bound_seq_per_s else 0.0


@dataclass
class LoraMix:
    """One (L, B) of the LoRA-mix measurement: the same tokens, rows mixed over n adapters or all on one."""

    length: int
    batch: int
    adapters: int
    mixed_seq_per_s: float
    one_seq_per_s: float
    plain_seq_per_s: float | None = None  # the plain (merged) graph in-process at the same L and B

    @property
    def ratio(self) -> float:
        return self.mixed_seq_per_s / self.one_seq_per_s if self.one_seq_per_s else 0.0


@dataclass
class Report:
    device: str
    backend: str
    precision: str
    model: str
    matmul_tflops: float
    flops_per_seq: dict[int, float]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lora: list[LoraMix] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    http_serve_config: dict[str, Any] = field(default_factory=dict)  # what `labelwise serve` was given
    elapsed_s: float = 0.0


# ---- the device -----------------------------------------------------------------------------------
# A one-node ONNX graph (Identity on float[1], opset 13, IR 7), serialized: enough for ORT to try its CUDA
# provider, without the `onnx` package (this script runs where only torch and onnxruntime are installed).
PROBE_GRAPH = (
    b'\x08\x07\x12\x00:;\n\x10\n\x01x\x12\x01y"\x08Identity\x12\x05probeZ\x0f\n\x01x\x12\n\n\x08\x08\x01\x12'
    b"\x04\n\x02\x08\x01b\x0f\n\x01y\x12\n\n\x08\x08\x01\x12\x04\n\x02\x08\x01B\x04\n\x00\x10\r"
)


def cuda_session_fails() -> str | None:
    """None when an ORT session asked for [CUDA, CPU] runs on CUDA; else why not, in one sentence.

    ORT lists CUDAExecutionProvider wherever onnxruntime-gpu is installed, and a session whose CUDA or
    cuDNN libraries do not load (a build for CUDA 13 on a CUDA 12 machine, say) runs on the CPU provider
    after one warning (serving/engine/providers.py): listed is not working, so a session is opened.
    """
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(PROBE_GRAPH, providers=[CUDA, "CPUExecutionProvider"])
        in_use = session.get_providers()
    except Exception as exc:  # a build that raises instead of falling back
        return f"ORT lists {CUDA} but a session on it did not start ({type(exc).__name__}: {exc})"
    if in_use and in_use[0] == CUDA:
        return None
    try:
        from serving.engine.providers import likely_cause

        cause = likely_cause(CUDA)
    except ImportError:
        cause = "the CUDA / cuDNN libraries onnxruntime-gpu is built for did not load, or no GPU is visible"
    return f"ORT lists {CUDA} but a session asked for it runs on {in_use}: {cause}"


def pick_backend(
    dry_run: bool, backend: str = "auto", notes: list[str] | None = None
) -> tuple[str, str, str]:
    """(backend, device, precision): ORT CUDA fp16, else torch CUDA fp16 (SDPA), else (dry run) ORT CPU.

    `backend="torch"` takes the torch reference even where ORT could run (on CPU in fp32 in a dry run):
    the path a GPU machine without onnxruntime-gpu takes, runnable anywhere. ORT's CUDA path is taken
    only when a session on it starts; where CUDA is listed but does not start, the torch path is taken
    and `notes` gets why.
    """
    import onnxruntime as ort
    import torch

    if backend not in ("auto", "torch"):
        raise BenchError(f"backend {backend!r}: expected 'auto' or 'torch'")
    if dry_run:
        if backend == "torch":
            return "torch fp32 + SDPA, dry run", "cpu", "fp32"
        return "onnxruntime CPU EP (IO binding), dry run", "cpu", "fp32"
    why = "asked for" if backend == "torch" else "no onnxruntime-gpu here"
    if backend == "auto" and CUDA in ort.get_available_providers() and torch.cuda.is_available():
        failed = cuda_session_fails()
        if failed is None:
            return "onnxruntime CUDA EP (IO binding)", "cuda", "fp16"
        why = "ORT's CUDA provider did not start"
        if notes is not None:
            notes.append(f"torch path: {failed}")
    if torch.cuda.is_available():
        return f"torch fp16 + SDPA ({why})", "cuda", "fp16"
    raise BenchError(
        "no CUDA device visible to torch or onnxruntime: run `make gpu-bench DRY_RUN=1` to check the "
        "script on CPU, or run it on a GPU machine (`labelwise doctor` says what the engine sees)"
    )


def device_name(device: str) -> str:
    import torch

    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        return f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    import platform

    return f"CPU ({platform.processor() or platform.machine()})"


def matmul_tflops(device: str, seconds: float) -> float:
    """Dense matmul TFLOP/s on the device (fp16 on GPU, fp32 on CPU): the roof the bound uses."""
    import torch

    n, dtype = (8192, torch.float16) if device == "cuda" else (512, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or runs < 3:
        a @ b
        runs += 1
        if device == "cuda" and runs % 10 == 0:
            torch.cuda.synchronize()
    if device == "cuda":
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return 2 * n**3 * runs / elapsed / 1e12


# ---- the model ------------------------------------------------------------------------------------
def build_base(folder: Path, shape: ModelShape) -> Path:
    """A random RoBERTa of `shape` and a byte-level BPE tokenizer trained on the packaged sentences."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    from .sentences import load_sentences

    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        load_sentences() * 2,
        vocab_size=min(shape.vocab, 2000),
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,  # its progress lines went to stdout, ahead of the table (stdout is the report)
    )
    RobertaTokenizerFast(tokenizer_object=bpe, model_max_length=max(LENGTHS)).save_pretrained(folder)
    config = RobertaConfig(
        vocab_size=max(shape.vocab, bpe.get_vocab_size()),
        hidden_size=shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=max(LENGTHS) + 2,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        type_vocab_size=1,
    )
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


def publish(repo_root: Path, base: Path, precision: str, texts: list[str], say: Any) -> Path:
    """Publish the classifier through the project's export; return its graph in `precision`."""
    import shutil

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from model_repository import BaseModelRef, ModelRepository, layout, weights_hash
    from training.export import export_into

    shutil.rmtree(repo_root, ignore_errors=True)
    repo = ModelRepository(repo_root)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={x: i for i, x in enumerate(LABELS)},
    ).eval()
    ref = BaseModelRef(id=str(base), content_hash=weights_hash(base), architecture="roberta")
    precisions = ["fp32"] if precision == "fp32" else ["fp32", precision]
    with repo.new_version(
        SCENARIO, strategy="full", base_model=ref, labels=LABELS, max_length_tokens=max(LENGTHS)
    ) as draft:
        tokenizer.save_pretrained(draft.path / layout.TOKENIZER_DIR)
        draft.fields.update(
            export_into(
                draft.path,
                model=model,
                tokenizer=tokenizer,
                strategy="full",
                base_model=ref,
                precisions=precisions,
                parity_texts=texts[:32],
                max_length_tokens=max(LENGTHS),
                parity_rows=32,
                say=say,
            )
        )
    repo.set_alias(SCENARIO, "production", draft.version)
    return repo.version_path(SCENARIO, draft.version) / layout.graph_file(precision)


# ---- in-process ---------------------------------------------------------------------------------
def _timed(run: Any, batch: int, seconds: float) -> float:
    for _ in range(2):  # first runs allocate and pick kernels for this shape
        run()
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or runs < 3:
        run()
        runs += 1
    return batch * runs / elapsed


def in_process_ort(graph_path: Path, device: str, plan: Plan, vocab: int) -> dict[tuple[int, int], float]:
    """seq/s of serving's OnnxGraph (IO binding: inputs copied once, logits fetched once) per (L, B)."""
    from serving.engine import OnnxGraph

    providers = [CUDA, "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    graph = OnnxGraph(graph_path, providers, plan.threads)
    rng = np.random.default_rng(0)
    out = {}
    for length in plan.lengths:
        for batch in plan.batch_sizes:
            ids = rng.integers(5, vocab, (batch, length), dtype=np.int64)
            mask = np.ones_like(ids)
            out[(length, batch)] = _timed(lambda i=ids, m=mask: graph.run(i, m), batch, plan.seconds_per_cell)
    return out


def in_process_torch(base: Path, device: str, plan: Plan, vocab: int) -> dict[tuple[int, int], float]:
    """The reference where onnxruntime-gpu is absent: torch fp16, SDPA attention, same model."""
    import torch
    from transformers import AutoModelForSequenceClassification

    dtype = torch.float16 if device == "cuda" else torch.float32
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(LABELS), attn_implementation="sdpa", dtype=dtype
    ).to(device)
    model.eval()
    out = {}
    with torch.inference_mode():
        for length in plan.lengths:
            for batch in plan.batch_sizes:
                ids = torch.randint(5, vocab, (batch, length), device=device)
                mask = torch.ones_like(ids)

                def run(i: Any = ids, m: Any = mask) -> None:
                    model(input_ids=i, attention_mask=m).logits.float().cpu()  # fetched, as serving does

                out[(length, batch)] = _timed(run, batch, plan.seconds_per_cell)
    return out


# ---- 32 LoRA scenarios in one batch ---------------------------------------------------------------
def random_adapters(spec: Any, n: int, seed: int = 0) -> list[Any]:
    """n LoRA scenario versions as serving reads them (lora.npz / head.npz arrays), random, rank spec.rank.

    Label counts vary from 2 to 6, as different scenarios' would: the tables pad and mask them.
    """
    from model_repository import HEAD_ARRAYS, AdapterEntry

    rng = np.random.default_rng(seed)
    layers, h, r = spec.num_layers, spec.hidden_size, spec.rank
    out = []
    for k in range(n):
        lora: dict[str, np.ndarray] = {}
        for proj, (d_in, d_out) in spec.projections.items():
            lora[f"{proj}.A"] = rng.normal(0, 0.05, (layers, r, d_in)).astype(np.float32)
            lora[f"{proj}.B"] = rng.normal(0, 0.05, (layers, d_out, r)).astype(np.float32)
            lora[f"{proj}.scaling"] = np.full(layers, 2.0, dtype=np.float32)  # lora_alpha 16 / r 8
            lora[f"{proj}.layers"] = np.arange(layers, dtype=np.int64)
        labels = 2 + k % 5
        shapes = {
            "dense_weight": (h, h),
            "dense_bias": (h,),
            "out_proj_weight": (labels, h),
            "out_proj_bias": (labels,),
            "weight": (labels, h),
            "bias": (labels,),
        }
        head = {
            name: rng.normal(0, 0.1, shapes[name]).astype(np.float32) for name in HEAD_ARRAYS[spec.head_kind]
        }
        out.append(AdapterEntry(f"lora-{k:02d} v1", spec.base_key, spec.head_kind, lora, head))
    return out


def lora_flops_per_sequence(shape: ModelShape, spec: Any, length: int) -> float:
    """The encoder's FLOPs plus each adapted projection's two rank-r matmuls per layer."""
    extra = sum(2 * length * spec.rank * (d_in + d_out) for d_in, d_out in spec.projections.values())
    return shape.flops_per_sequence(length) + shape.layers * extra


def _check_mix(
    mixed: np.ndarray, one: np.ndarray, order: np.ndarray, num_labels: np.ndarray, fp16: bool
) -> None:
    """Rows of adapter 0 agree between the two passes; rows of other adapters do not: each row ran its own."""
    width = int(num_labels[0])
    same = order == 0
    tol = 5e-2 if fp16 else 1e-4
    if not np.allclose(mixed[same, :width], one[same, :width], atol=tol, rtol=tol):
        raise BenchError("LoRA mix: rows of adapter 0 differ between the mixed and the one-adapter pass")
    other = ~same
    if other.any() and np.allclose(mixed[other, :width], one[other, :width], atol=tol, rtol=tol):
        raise BenchError("LoRA mix: rows of other adapters gave adapter 0's logits")
    # Columns past a row's own label count are masked (-inf), so no row reads another's labels.
    for row, k in enumerate(order):
        if np.isfinite(mixed[row, int(num_labels[k]) :]).any():
            raise BenchError(f"LoRA mix: row {row} (adapter {k}) has logits past its {num_labels[k]} labels")


def _time_mix(
    plan: Plan, n: int, vocab: int, make_pass: Any, num_labels: np.ndarray, fp16: bool
) -> list[tuple[int, float, float]]:
    """(B, mixed seq/s, one-adapter seq/s) per B; make_pass(ids, mask, index) -> a callable pass."""
    rng = np.random.default_rng(1)
    out = []
    for batch in plan.lora_batch_sizes:
        ids = rng.integers(5, vocab, (batch, plan.lora_length), dtype=np.int64)
        mask = np.ones_like(ids)
        order = rng.permutation(np.arange(batch) % n)  # uniform: each adapter B/n rows, shuffled
        mixed = make_pass(ids, mask, order)
        one = make_pass(ids, mask, np.zeros(batch, dtype=np.int64))
        _check_mix(mixed(), one(), order, num_labels, fp16)
        best = {"mixed": 0.0, "one": 0.0}
        for _round in range(plan.lora_rounds):  # alternate: drifts (clocks, neighbours) hit both alike
            for name, run in (("mixed", mixed), ("one", one)):
                seconds = plan.seconds_per_cell / 2
                best[name] = max(best[name], _timed(run, batch, seconds))
        out.append((batch, best["mixed"], best["one"]))
    return out


def lora_mix_ort(
    plan: Plan, repo_root: Path, base: Path, device: str, precision: str, vocab: int, say: Any
) -> tuple[list[tuple[int, float, float]], Any, str]:
    """Export the shared graph into the repository and time it through serving's SharedAdapterGraph."""
    from model_repository import ModelRepository, layout
    from serving.engine import MultiAdapterCache
    from training.multi_adapter import export_multi_adapter_base, resolve_base

    repo = ModelRepository(repo_root)
    start = time.perf_counter()
    export_multi_adapter_base(
        repo, base, rank=LORA_RANK, precisions=[precision], threads=plan.threads or 2, say=say
    )
    exported_s = time.perf_counter() - start
    _ref, _path, key = resolve_base(base)
    providers = [CUDA, "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    folder = layout.multi_adapter_folder(LORA_RANK, precision)
    shared = MultiAdapterCache().get(repo, key, folder, providers, plan.threads)
    entries = random_adapters(shared.spec, plan.lora_adapters)
    start = time.perf_counter()
    for entry in entries:  # one load after another, as a replica hosting them does
        shared.install(entry.name, 1, entry)
    installed_s = time.perf_counter() - start
    table = shared.table
    assert table is not None
    entry_of = {e.name: e for e in entries}
    by_row = {row: (k, entry_of[k[0]]) for k, row in table.row_of.items()}

    def make_pass(ids: np.ndarray, mask: np.ndarray, index: np.ndarray) -> Any:
        rows = [by_row[int(i)] for i in index]  # bound per row, as the batcher binds each text's version
        return lambda: shared.run(ids, mask, rows, table)

    from model_repository import NUM_LABELS_INPUT

    num_labels = np.asarray(table.tables[NUM_LABELS_INPUT])
    timed = _time_mix(plan, plan.lora_adapters, vocab, make_pass, num_labels, precision == "fp16")
    how = (
        f"shared multi-adapter graph {key}/{folder} (exported and checked in {exported_s:.0f}s), "
        f"serving's SharedAdapterGraph on {shared.graph.provider}, {len(entries)} installed in "
        f"{installed_s:.1f}s, table {table.nbytes / 2**20:.1f} MB"
    )
    return timed, shared.spec, how


def lora_mix_torch(
    plan: Plan, base: Path, device: str, vocab: int
) -> tuple[list[tuple[int, float, float]], Any, str]:
    """The reference where onnxruntime-gpu is absent: the module the graph is traced from, same tables."""
    import torch

    from model_repository import ADAPTER_INDEX_INPUT, NUM_LABELS_INPUT, build_tables
    from training.model import lora_targets
    from training.multi_adapter import build_module, resolve_base

    ref, path, key = resolve_base(base)
    module, spec = build_module(path, key, LORA_RANK, lora_targets(ref.architecture or "roberta", None))
    dtype = torch.float16 if device == "cuda" else torch.float32
    module = module.to(device=device, dtype=dtype).eval()
    tables = build_tables(spec, random_adapters(spec, plan.lora_adapters), dtype=np.float32)
    on_device = {
        name: torch.from_numpy(t).to(device=device, dtype=dtype if t.dtype == np.float32 else None)
        for name, t in tables.items()
    }
    names = spec.input_names()

    def make_pass(ids: np.ndarray, mask: np.ndarray, index: np.ndarray) -> Any:
        feed = {
            **on_device,
            "input_ids": torch.from_numpy(ids).to(device),
            "attention_mask": torch.from_numpy(mask).to(device),
            ADAPTER_INDEX_INPUT: torch.from_numpy(np.asarray(index, dtype=np.int64)).to(device),
        }
        args = tuple(feed[n] for n in names)

        def run() -> np.ndarray:
            with torch.inference_mode():
                return module(*args).float().cpu().numpy()  # fetched, as serving does

        return run

    num_labels = np.asarray(tables[NUM_LABELS_INPUT])
    timed = _time_mix(plan, plan.lora_adapters, vocab, make_pass, num_labels, device == "cuda")
    how = f"torch reference: the traced multi-adapter module ({dtype}, eager attention) on {device}"
    return timed, spec, how


def add_lora_rows(
    report: Report,
    plan: Plan,
    timed: list[tuple[int, float, float]],
    spec: Any,
    how: str,
    measured: dict[tuple[int, int], float],
) -> None:
    length, n = plan.lora_length, plan.lora_adapters
    bound = report.matmul_tflops * 1e12 / lora_flops_per_sequence(plan.shape, spec, length)
    targets = "/".join(p.rsplit(".", 1)[-1] for p in spec.projections)
    for batch, mixed, one in timed:
        result = LoraMix(length, batch, n, mixed, one, measured.get((length, batch)))
        report.lora.append(result)
        report.rows.append(Row(f"LoRA r{spec.rank}, {n} adapters mixed", length, str(batch), mixed, bound))
        report.rows.append(Row(f"LoRA r{spec.rank}, all rows on 1 adapter", length, str(batch), one, bound))
        verdict = (
            "dry run, no verdict" if plan.dry_run else ("met" if result.ratio >= LORA_TARGET else "NOT met")
        )
        note = (
            f"LoRA mix L={length} B={batch}: {n} adapters mixed = {result.ratio:.2f} x one adapter "
            f"(target >= {LORA_TARGET}: {verdict})"
        )
        if result.plain_seq_per_s:
            note += f"; {mixed / result.plain_seq_per_s:.2f} x the plain graph in-process at this L and B"
        report.notes.append(note)
    report.notes.append(
        f"LoRA mix: {n} random rank-{spec.rank} adapters on {targets}, 2-6 labels each; {how}"
    )


# ---- through HTTP -------------------------------------------------------------------------------
def texts_of_length(tokenizer_dir: Path, length: int, n: int) -> list[str]:
    """n different texts that tokenize to exactly `length` tokens (specials included), cut on word
    boundaries: a word that would go past `length` is passed over for a shorter one further on."""
    from transformers import AutoTokenizer

    from .sentences import load_sentences

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    if length > tok.model_max_length:
        raise BenchError(f"texts of {length} tokens: the model reads at most {tok.model_max_length}")
    words = " ".join(load_sentences()).split()
    out = []
    for start in range(n):
        picked: list[str] = []
        pos, tokens, passed = start * 7, len(tok("")["input_ids"]), 0
        while tokens < length:
            if passed == len(words):
                raise BenchError(f"no words make a text of exactly {length} tokens ({tokens} reached)")
            text = " ".join([*picked, words[pos % len(words)]])
            candidate = len(tok(text, verbose=False)["input_ids"])  # no warning for one past the max
            if candidate <= length:
                picked.append(words[pos % len(words)])
                tokens, passed = candidate, 0
            else:
                passed += 1
            pos += 1
        out.append(" ".join(picked))
    return out


VALUES_GPU = Path(__file__).resolve().parents[1] / "helm" / "labelwise" / "values-gpu.yaml"
# values-gpu.yaml's serve.args, for a machine that got only part of the tree (a test keeps them equal).
VALUES_GPU_ARGS: dict[str, Any] = {
    "num_gpus": 0.5,
    "num_cpus": 3.0,
    "max_batch_size": 512,
    "batch_wait_timeout_s": 0.005,
    "max_batch_tokens": 65536,
    "pass_padding_tokens": 65536,
    "max_concurrent_batches": 4,
    "max_ongoing_requests": 1024,
    "ort_providers": [CUDA, "CPUExecutionProvider"],
    "precision": "fp16",
}
# The settings the HTTP note prints: replicas per GPU, their resources, and the batching.
HTTP_SHOWN = (
    "num_gpus",
    "num_cpus",
    "max_batch_size",
    "max_batch_tokens",
    "pass_padding_tokens",
    "batch_wait_timeout_s",
    "max_concurrent_batches",
    "max_ongoing_requests",
)


def values_gpu_args(path: Path = VALUES_GPU) -> tuple[dict[str, Any], str]:
    """values-gpu.yaml's serve.args and where they came from: the file, else VALUES_GPU_ARGS."""
    import copy

    import yaml

    if not path.is_file():
        return copy.deepcopy(VALUES_GPU_ARGS), f"{path.name} not here: its values as written in gpu_bench.py"
    values = yaml.safe_load(path.read_text(encoding="utf-8"))
    args = ((values or {}).get("serve") or {}).get("args")
    if not isinstance(args, dict):
        raise BenchError(f"{path}: no serve.args mapping to take the HTTP step's serve config from")
    return args, f"helm/labelwise/{path.name} serve.args"


def http_replicas(args: dict[str, Any]) -> int:
    """The HTTP step's (direct-ingress) replicas for values-gpu's serve.args: as many as fit one GPU."""
    gpus = float(args.get("num_gpus") or 0.0)
    return max(1, round(1 / gpus)) if gpus > 0 else 1


def http_serve_config(
    plan: Plan, repo_root: Path, precision: str, device: str, values: Path = VALUES_GPU
) -> tuple[dict[str, Any], str]:
    """The HTTP step's Serve config: values-gpu.yaml's serve.args with only what the bench must change,
    and a note saying which replicas per GPU and batching it runs.

    Changed: the repository and scenario (the bench's model), the precision (fp32 in a dry run), the
    replicas (values-gpu autoscales 2 per GPU worker; here the fixed number per GPU its num_gpus gives,
    since direct ingress needs a number), max_texts_per_request (the bench's requests), and in a dry
    run the CPU provider with num_gpus 0; num_cpus only where this machine has fewer cores than the
    replicas would reserve (they would stay pending).
    """
    args, source = values_gpu_args(values)
    config = dict(args)
    replicas = http_replicas(config)
    config.update(
        repository=str(repo_root),
        scenarios=[{"name": SCENARIO}],
        precision=precision,
        num_replicas=replicas,
        max_texts_per_request=max(plan.http_texts_per_request, int(config.get("max_texts_per_request", 64))),
    )
    config.pop("autoscaling_config", None)
    changed = [
        "repository and scenarios (the bench's model)",
        f"precision {precision}",
        f"num_replicas {replicas}",
        f"max_texts_per_request {config['max_texts_per_request']}",
    ]
    if device != "cuda":
        config.update(num_gpus=0.0, ort_providers=["CPUExecutionProvider"])
        changed += ["num_gpus 0", "ort_providers CPU"]
    from serving.local_ray import local_cores  # the cores a local `labelwise serve` (and its Ray) counts

    cores = local_cores()
    fit = float(max(1, cores // replicas))
    if float(config.get("num_cpus", 1.0)) > fit:
        config["num_cpus"] = fit
        changed.append(f"num_cpus {fit:g} ({cores} cores here)")
    per_gpu = f"{replicas} replicas per GPU" if device == "cuda" else f"{replicas} replicas (CPU, dry run)"
    shown = ", ".join(f"{k} {config[k]}" for k in HTTP_SHOWN if k in config)
    note = f"HTTP serve config from {source}: {per_gpu}, {shown}; the bench sets {', '.join(changed)}"
    return config, note


def through_http(plan: Plan, config: dict[str, Any], tokenizer_dir: Path, say: Any) -> dict[int, float]:
    """Closed-loop seq/s per L through `labelwise serve` on 127.0.0.1 with `config` (http_serve_config)."""
    import yaml

    from serving.config import ServingConfig

    from .loadgen import LoadSpec, run_in_subprocess
    from .processes import python_cmd, start_server, stop_server, wait_server_ready

    ServingConfig(**config)  # refused here, before a server starts, if values-gpu.yaml has a bad key
    cfg = plan.out_dir / "serve-config.yaml"
    cfg.write_text(yaml.safe_dump(config), encoding="utf-8")
    url = f"http://127.0.0.1:{plan.port}"
    cmd = python_cmd("-m", "labelwise.cli", "serve", "--config", str(cfg), "--port", str(plan.port))
    out = {}
    server = start_server("labelwise serve", cmd, url, plan.out_dir / "serve.log")
    try:
        waited = wait_server_ready(server, 300)
        say(f"HTTP: labelwise serve ready in {waited:.0f}s")
        for length in plan.lengths:
            texts_file = plan.out_dir / f"texts-{length}.txt"
            texts_file.write_text("\n".join(texts_of_length(tokenizer_dir, length, 64)), encoding="utf-8")
            spec = LoadSpec(
                url=url,
                scenarios=[SCENARIO],
                texts_per_request=plan.http_texts_per_request,
                concurrency=plan.http_concurrency,
                duration_s=plan.http_duration_s,
                warmup_s=max(0.5, plan.http_duration_s / 4),
            )
            result = run_in_subprocess(spec, str(texts_file))
            if result["errors"]:
                raise BenchError(
                    f"HTTP at L={length}: {result['errors']} failed requests {result['error_kinds']}"
                )
            out[length] = float(result["seq_per_s"])
    finally:
        stop_server(server)
    return out


def free_port_pair() -> int:
    """A loopback port p with p + 1 also free (direct ingress takes both), below the ephemeral range."""
    from serving.local_ray import free_loopback_port

    from .processes import port_taken

    for _ in range(50):
        port = free_loopback_port()
        if port_taken("127.0.0.1", port + 1) is None:
            return port
    raise BenchError("no two adjacent free loopback ports for the HTTP measurement")


# ---- the table ----------------------------------------------------------------------------------
def render(report: Report) -> str:
    lines = [
        f"device: {report.device}; backend: {report.backend}; precision: {report.precision}",
        f"model: {report.model}; matmul: {report.matmul_tflops:.2f} TFLOP/s measured; "
        + "; ".join(f"L={n}: {f / 1e9:.3g} GFLOP/seq" for n, f in report.flops_per_seq.items()),
        "",
        "| path | L | B | seq/s | bound seq/s | ratio to bound |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in report.rows:
        figures = f"{r.seq_per_s:,.0f} | {r.bound_seq_per_s:,.0f} | {r.ratio:.3f}"
        lines.append(f"| {r.path} | {r.length} | {r.batch} | {figures} |")
    lines += [f"note: {n}" for n in report.notes]
    lines += [f"FAILED: {f}" for f in report.failures]
    lines.append(f"total {report.elapsed_s:.0f}s")
    return "\n".join(lines)


def write_json(report: Report, out_dir: Path) -> Path:
    path = out_dir / "gpu_bench.json"
    path.write_text(
        json.dumps(
            {
                **asdict(report),
                "rows": [{**asdict(r), "ratio": r.ratio} for r in report.rows],
                "lora": [{**asdict(m), "ratio": m.ratio, "target": LORA_TARGET} for m in report.lora],
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    return path


def run(plan: Plan, say: Any = print) -> Report:
    """Every step; gpu_bench.json is written whatever a step after the first figures raises."""
    start = time.perf_counter()
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    (plan.out_dir / "gpu_bench.json").unlink(missing_ok=True)  # never an earlier run's, if this one fails
    backend_notes: list[str] = []
    backend, device, precision = pick_backend(plan.dry_run, plan.backend, backend_notes)
    if plan.http and not backend.startswith("torch"):  # now, not after every in-process figure
        from .processes import require_free_port

        require_free_port("labelwise serve", f"http://127.0.0.1:{plan.port}")
    shape = plan.shape
    say(f"gpu-bench: {backend}, {precision}, {shape.name}")
    for note in backend_notes:
        say(note)
    tflops = matmul_tflops(device, 0.5 if plan.dry_run else 3.0)
    flops = {n: shape.flops_per_sequence(n) for n in plan.lengths}
    report = Report(device_name(device), backend, precision, shape.name, tflops, flops, notes=backend_notes)
    try:
        _measure(report, plan, device, say)
    finally:
        report.elapsed_s = time.perf_counter() - start
        write_json(report, plan.out_dir)
    return report


def _measure(report: Report, plan: Plan, device: str, say: Any) -> None:
    from .sentences import load_sentences

    backend, precision, shape, tflops, flops = (
        report.backend, report.precision, plan.shape, report.matmul_tflops, report.flops_per_seq,
    )  # fmt: skip
    base = build_base(plan.out_dir / "base", shape)
    vocab = min(shape.vocab, 2000)  # ids the tokenizer can produce; the embedding size does not matter
    if backend.startswith("torch"):
        # No ORT session would read an exported graph: the torch module runs from the base folder.
        report.notes.append("torch path: the classifier is not exported (nothing here reads an ONNX graph)")
        measured = in_process_torch(base, device, plan, vocab)
    else:
        graph = publish(plan.out_dir / "repository", base, precision, load_sentences(), say)
        measured = in_process_ort(graph, device, plan, vocab)
    for (length, batch), seq_s in measured.items():
        report.rows.append(Row("in-process", length, str(batch), seq_s, tflops * 1e12 / flops[length]))
    report.notes.append(f"in-process: B = {', '.join(map(str, plan.batch_sizes))} rows of exactly L tokens")
    if plan.lora:
        try:
            if backend.startswith("torch"):
                if plan.backend == "torch":
                    why = "asked for"
                elif "did not start" in backend:
                    why = "ORT's CUDA provider did not start"
                else:
                    why = "onnxruntime-gpu is not installed"
                report.notes.append(
                    f"LoRA mix: the torch reference ({why}): the module serving's shared graph is traced "
                    "from, with the same tables, not ORT"
                )
                timed, spec, how = lora_mix_torch(plan, base, device, vocab)
            else:
                repo_root = plan.out_dir / "repository"
                timed, spec, how = lora_mix_ort(plan, repo_root, base, device, precision, vocab, say)
            add_lora_rows(report, plan, timed, spec, how, measured)
        except Exception as exc:  # the other figures still print; the run exits 1
            report.failures.append(f"LoRA mix: {type(exc).__name__}: {exc}")
    if plan.http and not backend.startswith("torch"):
        try:
            import ray.serve  # noqa: F401
        except ImportError:
            report.notes.append("HTTP: Ray Serve is not installed (pip install 'labelwise[gpu]')")
            return
        try:  # as the LoRA mix: a failed server start or load keeps the other figures; the run exits 1
            config, how = http_serve_config(plan, plan.out_dir / "repository", precision, device)
            report.http_serve_config = config
            report.notes.append(how)
            say(how)
            served = through_http(plan, config, base, say)
        except Exception as exc:
            report.failures.append(f"HTTP: {type(exc).__name__}: {exc}")
            return
        label = f"{plan.http_texts_per_request} texts x c={plan.http_concurrency}"
        for length, seq_s in served.items():
            report.rows.append(Row("HTTP", length, label, seq_s, tflops * 1e12 / flops[length]))
            best = max(v for (n, _b), v in measured.items() if n == length)
            report.notes.append(f"HTTP L={length}: {seq_s / best:.2f} of the best in-process figure")
    elif plan.http:
        report.notes.append("HTTP: skipped on the torch path (serving runs ORT: onnxruntime-gpu on a GPU)")


def refuse_unusable_options(args: argparse.Namespace) -> None:
    """LoadTestOptionError (exit 2) for an option no run can use, before the CUDA check, the export and the
    timings: an --out that is a file, or lies under one, ended in a NotADirectoryError traceback; a --port
    no server can listen on failed the HTTP step only after every in-process figure, and so would a port
    whose direct-ingress range (one port per ingress replica from it, serving.local_ray.direct_ingress_env)
    runs past 65535."""
    if args.port is not None and not 0 <= args.port <= 65535:
        raise LoadTestOptionError(f"--port {args.port}: use a TCP port from 1 to 65535 (or 0: a free one)")
    if args.port and not args.no_http:
        try:
            replicas = http_replicas(values_gpu_args()[0])
        except BenchError:  # a values-gpu.yaml without serve.args: the HTTP step says so
            replicas = 1
        last = args.port + replicas - 1
        if last > 65535:
            raise LoadTestOptionError(
                f"--port {args.port}: the HTTP step's {replicas} direct-ingress replicas take ports "
                f"{args.port}-{last}, past 65535; use a port from 1 to {65536 - replicas} (or 0: a free "
                "one), or --no-http"
            )
    why = why_not_a_folder(args.out)
    if why is not None:
        raise LoadTestOptionError(f"--out {why}")


def main(argv: list[str] | None = None) -> int:
    from .processes import terminated_as_exit

    parser = argparse.ArgumentParser(
        prog="python -m loadtests.gpu_bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="Tiny model on CPU, short timings, same table."
    )
    parser.add_argument("--out", type=Path, default=Path("var/gpu-bench"))
    parser.add_argument("--no-http", action="store_true", help="Skip the HTTP measurement.")
    parser.add_argument("--no-lora", action="store_true", help="Skip the 32-LoRA mixed-batch measurement.")
    parser.add_argument(
        "--port", type=int, default=None, help="Port of the served measurement (default: a free one)."
    )
    parser.add_argument(
        "--backend", choices=("auto", "torch"), default="auto",
        help="torch: the torch fp16 reference even where onnxruntime-gpu is installed (fp32 on CPU with "
        "--dry-run); auto: ORT's CUDA provider where it is there",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        refuse_unusable_options(args)
    except LoadTestOptionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.dry_run:
        plan = Plan(
            True, args.out, seconds_per_cell=0.02, http_duration_s=1.5, http_concurrency=4,
            http_texts_per_request=8, threads=1, lora_batch_sizes=DRY_RUN_LORA_BATCH_SIZES,
        )  # fmt: skip
    else:
        plan = Plan(False, args.out)
    plan.http = not args.no_http
    plan.lora = not args.no_lora
    plan.backend = args.backend
    plan.port = args.port or free_port_pair()
    try:
        # SIGTERM runs the `finally` that stops `labelwise serve` (its own session: Ray, GPU memory)
        with terminated_as_exit():
            report = run(plan, say=lambda m: print(f"[gpu-bench] {m}", file=sys.stderr, flush=True))
    except (LabelwiseError, subprocess.TimeoutExpired) as exc:  # LoadTestError, ModelLoadError, ...
        written = plan.out_dir / "gpu_bench.json"
        kept = f" (the figures before it: {written})" if written.is_file() else ""
        print(f"error: {type(exc).__name__}: {exc}{kept}", file=sys.stderr)
        return 1
    print(render(report))
    return 1 if report.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
