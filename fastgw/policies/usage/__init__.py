"""API keys, usage plans, throttling and quotas (AWS usage plans): the usage policy.

    plan.py     compile: the usage part of the compiled config (plans, keys, throttle levels, idents)
    stage.py    check: the per-worker stage the pipeline calls (UsageStage.check)
    redis.py    the Redis backend of the checks (one Lua script per check, Redis's clock)
    persist.py  the main process's thread: shared memory -> SQLite each second, restore at start
    service.py  key and usage management for the admin API and the CLI
    keys.py     API key values: generation, validation, hashing (values are never stored in clear)

Storage itself is fastgw/state/ (shm.py, store.py).
"""
