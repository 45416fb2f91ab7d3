"""Compatibility entry point: the benchmark harness is ``benchmarks/run.py``.

Kept so that existing ``make bench`` / ``make bench-quick`` invocations
(``python benchmarks/bench.py [--quick] --out DIR [--photos DIR] [--no-doc]``) keep working;
every option is passed through unchanged. See ``python benchmarks/run.py --help``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
