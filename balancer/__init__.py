"""distlb-balancer: a stateless distcc proxy; each job goes to the least-loaded healthy server.

The package stands on floors along a job's path; a module imports only from its own
floor or lower (tests/unit/test_layout.py holds it to that, counting every import):

1. ``settings``, ``errors``, ``workers/``: values, the ways a job ends undispatched, and
   the worker processes' plumbing.
2. ``routing/``: pure decisions on an injected clock: which backend (its state, the
   picker and its index, compilers), how long a job takes, who waits for a slot.
3. ``pool/``, ``config``: the backends as they are (membership, reloads, reports,
   probes); the config that makes them.
4. ``dispatch/``, ``cli``: one job's attempts (retries, hedges, sending, the cache);
   the command line.
5. ``observe/``: counters, metrics, the dashboard and the admin port.
6. ``connection``: one client's connection, from its request to its reply.
7. ``service``: the listeners and everything's lifetime.
8. ``main``: the process (signals, workers).
"""
