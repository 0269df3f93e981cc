"""What the two daemons (distlb-server and distlb-balancer) share.

Depends on ``wire`` and ``client``; imports neither ``server`` nor ``balancer``.
"""
