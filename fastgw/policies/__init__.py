"""Per-request policies: what decides, before the integration runs, whether and how a request goes on.

One module or package per policy, each with the same three parts:

    compile   `compile_<policy>(config, stages)` (or, for CORS, per API) attaches the policy's compiled
              part to each route or API plan it applies to (RoutePlan.usage / .validator / .cache,
              ApiPlan.cors / .compression) and returns the problems found, with their place in the file
    stage     the per-worker runtime state, where the policy has any (UsageStage, CacheStage), built
              by the Gateway from the plan, with start(loop) / stop(), and swapped on a reload
    check     `check(...)`, called by the pipeline (fastgw/pipeline.py Gateway.handle) in a fixed
              order: CORS -> compression -> authorizer -> usage (API key, throttles, quota) -> validation
              -> cache. A check refuses with GatewayError, answers with GatewayAnswered (a CORS preflight) or returns
              what the request goes on with (a wrapped downstream, a waiter, a cache hit or fill)

Siblings never import each other (an import-linter independence contract). The authorizers are checked
before usage: a Lambda authorizer's usageIdentifierKey may be the request's API key.
"""
