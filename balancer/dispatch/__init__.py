"""Dispatch (floor 4): one job's way to a reply.

What lives here: the attempt loop (``dispatcher``), the job's record of its attempts and
its rules (``attempts``), how a slot is waited for (``acquire``), when to back a job up
(``hedge``), one attempt on one backend (``sender``) and the shared result cache
(``caching``).

What must not: the client's connection or its reply's bytes (``connection.py``), the
dashboard (``observe/``: the connection hands the dispatcher a callback), or the
backends' state beyond what an attempt's outcome says (``pool/``, ``routing/``).
"""
