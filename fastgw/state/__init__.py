"""State shared beyond one request: API keys, throttle buckets, quota counters and usage.

    plan.py     the usage part of the compiled config (plans, keys, throttle levels, idents)
    keys.py     API key values: generation, validation, hashing (values are never stored in clear)
    shm.py      the host-wide shared-memory table (GCRA TATs and quota counters, atomic updates)
    store.py    the durable SQLite store (runtime keys, quota counters, daily usage)
    persist.py  the main process's thread: shared memory -> SQLite each second, restore at start
    redis.py    the Redis backend (one Lua script per check, Redis's clock, Cluster-safe keys)

The request-path stage that uses all of this is fastgw/usage.py.
"""
