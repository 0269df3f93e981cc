"""Benchmarks: programs that print a small table of ratios and write it to
bench/results/. Each runs as a module from the repository root,
``.venv/bin/python -m bench.NAME [--help]``, so that ``bench``, ``tests.support`` and
the runtime packages import as packages, with no edit of the module path.

What lives here: a module per benchmark (its command line and its report), what every
one of them needs in harness.py (processes started in their own sessions, waited for,
stopped for sure), and a subpackage for a benchmark too big for one module (farmsim/,
behind farm.py). Nothing outside bench/ imports it but the unit tests of its pure parts
(tests/unit/test_farm_references.py); like the tests, it may import ``tests.support``.
"""
