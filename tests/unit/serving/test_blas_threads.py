"""A replica runs numpy's BLAS on one thread (serving.service.limit_blas_threads).

Checked in a child process started with OMP_NUM_THREADS=2, as Ray starts a 2-CPU replica: OpenBLAS
reads it when numpy loads, so the test process's own pool says nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

CHILD = """
import json
from threadpoolctl import threadpool_info
import numpy as np
from serving.service import limit_blas_threads

def blas_threads():
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

start = blas_threads()
before = limit_blas_threads()
after = blas_threads()
# The heads' matmul still gives numpy's answer on one thread.
a = np.arange(64 * 384, dtype=np.float32).reshape(64, 384) / 1e4
w = np.linspace(-1, 1, 256 * 384, dtype=np.float32).reshape(256, 384)
err = float(np.abs(a @ w.T - (a.astype(np.float64) @ w.T.astype(np.float64))).max())
print(json.dumps({"start": start, "before": before, "after": after, "err": err}))
"""


def test_replica_blas_runs_one_thread() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["start"] and all(n == 2 for n in seen["start"]), seen
    assert seen["before"] == 2
    assert seen["after"] and all(n == 1 for n in seen["after"]), seen
    assert seen["err"] < 1e-2
