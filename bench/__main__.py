"""`make bench`: every benchmark, one after the other, each printing its own figures.

.venv/bin/python -m bench            all of them
.venv/bin/python -m bench.<name>     one (see its --help)
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = (
    "upload_throughput",
    "worker_overhead",
    "watcher_detection",
    "e2e_latency",
    "generation",
)


def main() -> int:
    failed = 0
    for name in BENCHMARKS:
        print(f"\n=== bench.{name} ===", flush=True)
        failed |= subprocess.call(
            [sys.executable, "-m", f"bench.{name}"], stderr=subprocess.DEVNULL
        )
    return failed


if __name__ == "__main__":
    sys.exit(main())
