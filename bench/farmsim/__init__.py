"""The simulated farm behind bench/farm.py, by role.

model.py (the scenarios and what the seed decides), bounds.py (the lower bound and the
two reference schedulers), processes.py (sim-cc, distlb-server, HAProxy; the
balancers are bench/harness.py's), clients.py (the builds and the background load),
runs.py (one strategy's run, the rounds), report.py (the table,
bench/results/farm.{md,json,png}).

Its modules import bench/harness.py as ``bench.harness`` (bench/__init__.py: the
benchmarks run as modules from the repository root).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
