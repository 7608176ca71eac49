"""Run torch and ONNX Runtime on the same rows and compare what they compute."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_repository.passes import CPU_MAX_BATCH_TOKENS, MAX_BATCH_ROWS, serving_passes

from ..errors import ExportError, ParityError

# Sentences of very different lengths, so that the load check pads and truncates.
LOAD_CHECK_TEXTS = [
    "ok",
    "The service was fine.",
    "I waited forty minutes for a cold coffee and nobody apologised, which is not what I expected "
    "from a place with such glowing reviews; next time I will go elsewhere. " * 4,
    "Great!",
]


@dataclass
class Comparison:
    """How an ONNX output compares with the torch output on the same rows."""

    n_samples: int
    max_abs_diff: float
    agreement: float
    accuracy_delta: float | None


def sample_rows(
    texts: Sequence[str], labels: Sequence[Any] | None, max_rows: int, seed: int = 0
) -> tuple[list[str], list[Any] | None]:
    """A fixed (seeded) sample of at most max_rows rows, in their original order."""
    if labels is not None and len(labels) != len(texts):
        raise ExportError(f"parity_labels has {len(labels)} rows but parity_texts has {len(texts)}")
    idx = list(range(len(texts)))
    if len(idx) > max_rows:
        idx = sorted(random.Random(seed).sample(idx, max_rows))
    return [str(texts[i]) for i in idx], ([labels[i] for i in idx] if labels is not None else None)


def label_ids(labels: Sequence[Any] | None, label2id: dict[str, int]) -> np.ndarray | None:
    """Labels as logit indices: a string is a label name, always looked up in label2id (a scenario's labels
    may be digits: '1'..'5' are names, not indices); an integer is already an index (training's ids)."""
    if labels is None:
        return None
    out = []
    for value in labels:
        if isinstance(value, str):
            if value not in label2id:
                raise ExportError(
                    f"parity label {value!r} is not one of the model's labels {sorted(label2id)}"
                )
            out.append(label2id[value])
        else:
            out.append(int(value))
    return np.asarray(out)


def tokenize_batches(
    tokenizer: Any, texts: list[str], max_length_tokens: int, batch_size: int = 32
) -> list[dict[str, np.ndarray]]:
    """Dynamic padding per batch, as serving does."""
    batches = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(
            texts[start : start + batch_size],
            padding=True,
            truncation=True,
            max_length=max_length_tokens,
            return_tensors="np",
        )
        batches.append({k: np.asarray(v, dtype=np.int64) for k, v in enc.items()})
    return batches


def tokenize_passes(
    tokenizer: Any,
    texts: Sequence[str],
    max_length_tokens: int,
    max_batch_rows: int = MAX_BATCH_ROWS,
    max_batch_tokens: int = CPU_MAX_BATCH_TOKENS,
) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
    """The passes serving runs for these rows arriving in order (model_repository.passes.serving_passes),
    padded to each pass's longest row; and `order`: the k-th output row is texts[order[k]].

    Scoring in serving's passes is what makes an int8 figure the served one: dynamic int8 quantises each
    pass with one activation scale, so the rows and padding sharing a pass move a row's logits."""
    texts = [str(t) for t in texts]
    ids = tokenizer(texts, truncation=True, max_length=max_length_tokens)["input_ids"]
    passes = serving_passes([len(row) for row in ids], max_batch_rows, max_batch_tokens)
    batches = []
    for rows in passes:
        enc = tokenizer(
            [texts[i] for i in rows],
            padding=True,
            truncation=True,
            max_length=max_length_tokens,
            return_tensors="np",
        )
        batches.append({k: np.asarray(v, dtype=np.int64) for k, v in enc.items()})
    return batches, np.asarray([i for rows in passes for i in rows], dtype=np.int64)


def torch_outputs(fn: Any, batches: list[dict[str, np.ndarray]], input_names: list[str]) -> np.ndarray:
    """Run fn(**tensors) -> tensor [batch, n] over every batch, on CPU, without grad."""
    import torch

    outs = []
    with torch.inference_mode():
        for batch in batches:
            feed = {k: torch.from_numpy(batch[k]) for k in input_names if k in batch}
            outs.append(fn(**feed).float().cpu().numpy())
    return np.concatenate(outs)


def ort_session(path: Any, providers: list[str] | None = None, threads: int = 2) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers or ["CPUExecutionProvider"])


def session_input_names(session: Any) -> list[str]:
    return [i.name for i in session.get_inputs()]


def ort_outputs(session: Any, batches: list[dict[str, np.ndarray]]) -> np.ndarray:
    """Feed only the inputs the graph declares (BERT takes token_type_ids, RoBERTa does not)."""
    names = session_input_names(session)
    outs = []
    for batch in batches:
        missing = [n for n in names if n not in batch]
        if missing:
            raise ExportError(f"the graph wants inputs {missing} that the tokenizer does not produce")
        outs.append(np.asarray(session.run(None, {n: batch[n] for n in names})[0], dtype=np.float32))
    return np.concatenate(outs)


def max_abs_diff(reference: np.ndarray, candidate: np.ndarray, what: str) -> float:
    """max |reference - candidate| over the entries where the reference is finite; ParityError naming
    `what` and how many rows when the candidate holds NaN or inf where the reference does not (NaN compares
    False with every gate's tolerance, and a NaN row's argmax is label 0: it would pass as agreeing)."""
    finite = np.isfinite(reference)
    broken = finite & ~np.isfinite(candidate)
    if broken.any():
        rows = int(broken.reshape(broken.shape[0], -1).any(axis=1).sum()) if broken.ndim else 1
        total = int(reference.shape[0]) if reference.ndim else 1
        raise ParityError(
            f"{what}: NaN or inf on {rows} of {total} validation rows where the torch reference is finite; "
            "nothing published"
        )
    return float(np.abs(reference[finite] - candidate[finite]).max()) if finite.any() else 0.0


def compare(
    reference: np.ndarray, candidate: np.ndarray, gold: np.ndarray | None, what: str = "ONNX output"
) -> Comparison:
    """The candidate's logits against torch's on the same rows; ParityError (naming `what`) when the
    candidate is NaN or inf where torch is finite."""
    if reference.shape != candidate.shape:
        raise ExportError(f"{what} shape {candidate.shape} differs from torch {reference.shape}")
    diff = max_abs_diff(reference, candidate, what)
    ref_pred, cand_pred = reference.argmax(-1), candidate.argmax(-1)
    delta = None
    if gold is not None and len(gold):
        delta = float((cand_pred == gold).mean() - (ref_pred == gold).mean())
    return Comparison(
        n_samples=int(reference.shape[0]),
        max_abs_diff=diff,
        agreement=float((ref_pred == cand_pred).mean()) if len(ref_pred) else 1.0,
        accuracy_delta=delta,
    )


def load_check(session: Any, tokenizer: Any, max_length_tokens: int, width: int, what: str) -> None:
    """Run a padded batch of very different lengths; the output must be [4, width] and finite."""
    (batch,) = tokenize_batches(
        tokenizer, LOAD_CHECK_TEXTS, max_length_tokens, batch_size=len(LOAD_CHECK_TEXTS)
    )
    out = ort_outputs(session, [batch])
    if out.shape != (len(LOAD_CHECK_TEXTS), width):
        raise ExportError(f"{what}: output shape {out.shape}, expected {(len(LOAD_CHECK_TEXTS), width)}")
    if not np.isfinite(out).all():
        raise ExportError(f"{what}: output holds NaN or inf on the load-check batch")
