"""`make bench`: every benchmark, one after the other, each printing its own figures.

.venv/bin/python -m bench            all of them
.venv/bin/python -m bench.<name>     one (see its --help)

A benchmark's log (stderr) is kept out of the figures while it succeeds; when one fails, the
end of its log is shown, so that the reason is on screen.
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = (
    "s3_put",
    "upload_throughput",
    "worker_overhead",
    "fairness",
    "watcher_detection",
    "e2e_latency",
    "pipeline_throughput",
    "generation",
)
SHOWN_LOG_LINES = 40


def run(name: str) -> int:
    print(f"\n=== bench.{name} ===", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{name}"], stderr=subprocess.PIPE, text=True, check=False
    )
    if done.returncode != 0:
        tail = done.stderr.splitlines()[-SHOWN_LOG_LINES:]
        sys.stderr.write(
            f"bench.{name} failed (exit {done.returncode}); the end of its log:\n"
            + "".join(f"  {line}\n" for line in tail)
        )
    return done.returncode


def main() -> int:
    failed = 0
    for name in BENCHMARKS:
        failed |= run(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
