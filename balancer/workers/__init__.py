"""Workers (floor 1): ``--workers N`` processes on one port.

What lives here: starting and watching the processes (``supervisor``), merging their
status and metrics into one (``merge``) and the slot counts they share (``shared``).

What must not: anything of a job or a backend's health: the workers share counts, not
decisions, and this floor imports nothing of the balancer.
"""
