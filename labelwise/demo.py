"""The offline demo (`make demo`): train, publish and serve on this machine."""

from __future__ import annotations

import sys


def main() -> int:
    print(
        "labelwise demo: not available yet. Still missing: training (issue 3), ONNX export (issue 4) "
        "and serving (issue 5). `make test` runs what exists.",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
