"""The server's sandbox: where a job's compiler runs, and what it may reach.

What lives here: the bubblewrap command line and job limits (``launcher``), starting,
feeding, pinning and killing each job's process (``spawn``), the sandboxes started
ahead of their jobs (``warm``), the jobs' directory root (``jobs_root``), the checks at
start that the sandbox works for each compiler (``check``), and the compile user and
tmp-dir setup (``setup``).

What must not: the protocol, slots or the cache (``connection.py``, ``slots.py``), or
any judging of arguments (``daemon/judge.py``): the sandbox contains what the judge let
through, it does not decide it.
"""
