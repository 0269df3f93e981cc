"""What the two daemons (distlb-server and distlb-balancer) share: configuration and
their life (config.py, lifecycle.py, logs.py; notify.py, what they tell systemd), who
may connect (access.py, gss.py, principals.py), the argument judge (judge.py,
judge_config.py), bounds (bounds.py) and a waitable change (changes.py).

Depends on ``wire`` and ``client``; imports neither
``server`` nor ``balancer`` (tests/unit/test_layout.py).
"""
