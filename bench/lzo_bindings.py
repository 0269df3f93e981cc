"""Compare the two LZO1X bindings on real preprocessed C++ source.

python-lzo (the project's choice) against lzallright (pip install lzallright to
include it). Prints compress/decompress throughput (median of runs), sizes, and
whether each decompresses the other's output.

    .venv/bin/python -m bench.lzo_bindings
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import lzo

RESULTS = Path(__file__).parent / "results"
SOURCE = (
    b"#include <iostream>\n#include <map>\n#include <vector>\n#include <string>\nint main(){}\n"
)
RUNS = 7
REPEAT = 20


def _median_ms(fn: Callable[[], object]) -> float:
    samples = []
    for _ in range(RUNS):
        start = time.perf_counter()
        for _ in range(REPEAT):
            fn()
        samples.append((time.perf_counter() - start) / REPEAT * 1000)
    return statistics.median(samples)


def main() -> None:
    data = subprocess.run(["g++", "-E", "-x", "c++", "-"], input=SOURCE, capture_output=True,
                          check=True).stdout  # fmt: skip
    ours = bytes(lzo.compress(data, 1, False))
    rows = {
        "python-lzo": {
            "compressed_bytes": len(ours),
            "compress_ms": _median_ms(lambda: lzo.compress(data, 1, False)),
            "decompress_ms": _median_ms(lambda: lzo.decompress(ours, False, len(data))),
        }
    }
    try:
        import lzallright
    except ImportError:
        print("lzallright not installed: only python-lzo measured")
    else:
        codec = lzallright.LZOCompressor()
        theirs = codec.compress(data)
        rows["lzallright"] = {
            "compressed_bytes": len(theirs),
            "compress_ms": _median_ms(lambda: codec.compress(data)),
            "decompress_ms": _median_ms(lambda: codec.decompress(ours)),
            "reads_python_lzo": codec.decompress(ours) == data,
            "python_lzo_reads_it": bytes(lzo.decompress(theirs, False, len(data))) == data,
        }
    print(f"input: {len(data)} bytes of preprocessed C++, median of {RUNS} runs x {REPEAT}")
    print("| binding | compressed | compress ms | MB/s | decompress ms | MB/s |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        c, d = row["compress_ms"], row["decompress_ms"]
        print(f"| {name} | {row['compressed_bytes']} | {c:.2f} | {len(data) / c / 1000:.0f} "
              f"| {d:.2f} | {len(data) / d / 1000:.0f} |")  # fmt: skip
    if "lzallright" in rows:
        print(f"cross-compatible: {rows['lzallright']['reads_python_lzo']} and "
              f"{rows['lzallright']['python_lzo_reads_it']}")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lzo_bindings.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
