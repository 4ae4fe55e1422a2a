"""The stage cache (AWS API caching): the cache policy.

    stage.py    compile (compile_cache), the per-worker stage (CacheStage.check / fill) and the flush
    redis.py    the shared Redis tier behind each worker's LRU
"""
