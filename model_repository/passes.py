"""How serving cuts a batch of rows into forward passes, shared so that what is scored is cut the same way.

A replica hands the engine a batch of up to `max_batch_size` rows; the engine sorts it by token length
and cuts it so that no pass pads more than `max_batch_tokens` tokens (rows x the longest row). The cut
matters for more than speed: dynamic int8 quantises each MatMul's input with one scale for the whole
pass, so a row's int8 logits depend on which rows (and how much padding) share its pass. Scoring an int8
graph in other passes than serving's scores another model (docs/artifacts.md, "int8 depends on the
pass"). Training's export and `labelwise evaluate` therefore cut their rows with `serving_passes`.
"""

from __future__ import annotations

from collections.abc import Sequence

# ServingConfig's defaults (serving/config.py): the batch a replica's batch slot hands the engine, and the
# CPU token budget per pass. GPU deployments set a larger budget (helm/labelwise/values-gpu.yaml).
MAX_BATCH_ROWS = 64
CPU_MAX_BATCH_TOKENS = 256
GPU_MAX_BATCH_TOKENS = 65536  # helm/labelwise/values-gpu.yaml
# The most ONNX Runtime intra-op threads a session may be asked for (ServingConfig and every --threads):
# ORT takes a 32-bit count (99,999,999,999 failed as a pybind TypeError when a version loaded) and tries to
# start every thread asked for (100,000 hung `labelwise classify`); no machine it serves on has more cores.
MAX_INTRA_OP_THREADS = 1024


def length_passes(lengths: Sequence[int], max_batch_tokens: int) -> list[list[int]]:
    """Row indices sorted by length, cut so that rows x longest row <= max_batch_tokens per pass.

    Sorting keeps padding small; a single row longer than the budget still gets a pass of its own.
    """
    passes: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        # Ascending order: the padded width of the pass is this row's length.
        if current and (len(current) + 1) * lengths[i] > max_batch_tokens:
            passes.append(current)
            current = []
        current.append(i)
    if current:
        passes.append(current)
    return passes


def serving_passes(
    lengths: Sequence[int], max_batch_rows: int = MAX_BATCH_ROWS, max_batch_tokens: int = CPU_MAX_BATCH_TOKENS
) -> list[list[int]]:
    """The passes a replica runs for rows that arrive in this order, full batches of max_batch_rows at a
    time: each batch cut by length_passes. Indices are into `lengths`; every row appears once."""
    passes: list[list[int]] = []
    for start in range(0, len(lengths), max_batch_rows):
        chunk = lengths[start : start + max_batch_rows]
        passes.extend([[start + i for i in p] for p in length_passes(chunk, max_batch_tokens)])
    return passes
