"""Observe (floor 5): what an operator sees.

What lives here: counters and Prometheus metrics (``stats``, ``cache_metrics``), the
dashboard's live state and its hour of history (``activity``, ``history``, ``live``,
``dashboard.html``), and the admin port's pages (``admin``).

What must not: any decision about a job or a backend: this floor reads the others,
and nothing below it reads this one.
"""
