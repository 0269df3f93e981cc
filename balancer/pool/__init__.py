"""The pool (floor 3): the backends as they are now.

What lives here: the set of backends and its reloads (``pool``), and per backend the
loops that read its reports and probe it, with what their results do (``health``, which
sees the pool only through its small ``Watched`` protocol).

What must not: anything about one job (``dispatch/``), or a decision that needs no I/O
(that belongs in ``routing/``, where it can be tested without tasks).
"""
