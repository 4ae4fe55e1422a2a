"""Lambda authorizers for examples/lambda-authorizer.yaml (plain Python, as AWS's runtime calls them)."""


def token_authorizer(event, context):
    token = event["authorizationToken"]
    if token.startswith("deny"):
        effect = "Deny"
    else:
        effect = "Allow"
    # Allow (or deny) every method of the stage: the result is cached per token for 300 s.
    stage_arn = "/".join(event["methodArn"].split("/")[:2])
    return {
        "principalId": token.partition("-")[2] or "anonymous",
        "policyDocument": {"Version": "2012-10-17", "Statement": [
            {"Action": "execute-api:Invoke", "Effect": effect, "Resource": stage_arn + "/*"}]},
        "context": {"plan": "gold"},  # $context.authorizer.plan
    }


def simple_authorizer(event, context):
    user = (event.get("headers") or {}).get("x-user")
    return {"isAuthorized": user == "alice", "context": {"user": user}}
