"""The simulated farm behind bench/farm.py, by role.

model.py (the scenarios and what the seed decides), bounds.py (the lower bound and the
two reference schedulers), processes.py (sim-cc, distlb-server, distlb-balancer,
HAProxy), clients.py (the builds and the background load), runs.py (one strategy's
run, the rounds), report.py (the table, bench/results/farm.{md,json,png}).

bench/ is not a package: this one is found beside bench/farm.py (on the path that
found it), as bench/harness.py is, which its modules import as ``harness``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# As every script in bench/ does: the repository first on the module path, so that
# client, wire, tests and cache are the repository's (bench/cache.py is not ``cache``).
if sys.path[:1] != [str(ROOT)]:
    sys.path.insert(0, str(ROOT))
