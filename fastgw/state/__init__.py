"""Storage backends only: where state that outlives a request is kept. What the state means belongs to
the capability that uses it (fastgw/policies/usage for keys, throttles and quotas; fastgw/canary.py for
canary changes).

    shm.py      the host-wide shared-memory table (GCRA TATs and counters, atomic kernel updates)
    store.py    the durable SQLite store (runtime keys, quota counters, daily usage)
    canary.py   the canary changes made at run time (SQLite, the same file), laid over the config
"""
