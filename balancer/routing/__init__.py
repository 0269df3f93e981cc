"""Routing (floor 2): the pure decisions a job's path asks for.

What lives here: what the balancer believes of each backend (``backend``, its own
connections, what the log said of it), which compilers each runs (``compilers``), the
pick and its index (``picker``, ``roster``), how long a job will take where
(``estimates``), and the queue of jobs that wait for a slot (``queue``).

What must not: any I/O, task or sleep (the clock is injected: unit tests drive every
rule here without a network or real time); anything from a higher floor.
"""
