"""Swagger 2.0 <-> OpenAPI 3.0 for `fastgw export --format` of an imported document in the other version.

Swagger 2.0 -> OpenAPI 3.0: `in: body` parameters and `consumes` become the requestBody, `in: formData`
parameters a form requestBody (application/x-www-form-urlencoded or multipart/form-data), a response's
`schema` and `produces` its `content`, a parameter's or header's type its `schema`, `definitions` and
`securityDefinitions` components.schemas and components.securitySchemes (every #/definitions/ reference
follows), host/basePath/schemes `servers`; `#/parameters/` and `#/responses/` references are written in
place.

OpenAPI 3.0 -> Swagger 2.0 the reverse: the requestBody becomes the `in: body` parameter (one schema: the
application/json one's, else the first; `consumes` every media type) or formData parameters, responses'
content `produces` and `schema`, components the definitions and securityDefinitions, the first server
host/basePath/schemes, x-amazon-apigateway-integrations references written in place. What Swagger 2.0
cannot say (callbacks, links, cookie parameters, HTTP security schemes other than basic) is refused with
a ConversionError naming where it is.

The x-amazon-apigateway-* extensions are the same in both versions and are copied as they are.
"""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import urlsplit

from .reader import ANY_METHOD, X

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace", ANY_METHOD)
SCHEMA_KEYS = ("type", "format", "items", "enum", "default", "maximum", "minimum", "exclusiveMaximum",
               "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems",
               "multipleOf")
FORM_MEDIA = ("application/x-www-form-urlencoded", "multipart/form-data")


class ConversionError(ValueError):
    """What the other version cannot say; the message names where it is."""


def _rewrite_refs(node: Any, old: str, new: str) -> Any:
    if isinstance(node, list):
        return [_rewrite_refs(v, old, new) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _rewrite_refs(v, old, new) for k, v in node.items()}
    ref = out.get("$ref")
    if isinstance(ref, str) and ref.startswith(old):
        out["$ref"] = new + ref[len(old):]
    return out


def _inline(node: Any, doc: dict[str, Any], prefix: str, depth: int = 0) -> Any:
    """A reference into `prefix` (#/parameters/, #/components/responses/, ...) replaced by its target."""
    if isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith(prefix) and depth < 32:
        target: Any = doc
        for part in node["$ref"][2:].split("/"):
            target = target.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(target, dict) else None
        if target is None:
            raise ConversionError(f"{node['$ref']}: the reference has no target")
        return _inline(copy.deepcopy(target), doc, prefix, depth + 1)
    return node


def _operations(doc: dict[str, Any]):
    for path, item in (doc.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        for method, op in item.items():
            if method in METHODS and isinstance(op, dict):
                yield path, method, item, op


# -- Swagger 2.0 -> OpenAPI 3.0 -----------------------------------------------------------------------
def _schema_of_parameter(parameter: dict[str, Any]) -> dict[str, Any]:
    schema = {k: parameter.pop(k) for k in SCHEMA_KEYS if k in parameter}
    fmt = parameter.pop("collectionFormat", None)
    if fmt == "multi":
        parameter["explode"] = True
    elif fmt in ("csv", "ssv", "pipes"):
        parameter["style"] = {"csv": "form" if parameter.get("in") == "query" else "simple",
                              "ssv": "spaceDelimited", "pipes": "pipeDelimited"}[fmt]
        if parameter.get("in") == "query":
            parameter["explode"] = False
    parameter.pop("allowEmptyValue", None) if parameter.get("in") != "query" else None
    return schema


def _body_of(parameters: list[Any], consumes: list[str]) -> tuple[list[Any], dict[str, Any] | None]:
    """(the other parameters, the requestBody) of a Swagger 2.0 operation's parameters."""
    kept: list[Any] = []
    body: dict[str, Any] | None = None
    form: dict[str, Any] = {}
    required_form: list[str] = []
    for parameter in parameters:
        if not isinstance(parameter, dict):
            kept.append(parameter)
            continue
        where = parameter.get("in")
        if where == "body":
            body = {"content": {media: {"schema": copy.deepcopy(parameter.get("schema") or {})}
                                for media in consumes or ["application/json"]}}
            if parameter.get("description"):
                body["description"] = parameter["description"]
            if parameter.get("required"):
                body["required"] = True
            for key, value in parameter.items():
                if key.startswith("x-"):
                    body[key] = value
        elif where == "formData":
            p = dict(parameter)
            schema = _schema_of_parameter(p)
            if schema.get("type") == "file":
                schema = {"type": "string", "format": "binary"}
            if p.get("description"):
                schema["description"] = p["description"]
            form[p["name"]] = schema
            if p.get("required"):
                required_form.append(p["name"])
        else:
            p = dict(parameter)
            schema = _schema_of_parameter(p)
            p["schema"] = schema
            kept.append(p)
    if form:
        object_schema: dict[str, Any] = {"type": "object", "properties": form}
        if required_form:
            object_schema["required"] = required_form
        media = [m for m in consumes if m in FORM_MEDIA] or ["application/x-www-form-urlencoded"]
        body = {"content": {m: {"schema": object_schema} for m in media}}
    return kept, body


def _responses_3(responses: Any, produces: list[str]) -> Any:
    if not isinstance(responses, dict):
        return responses
    out = {}
    for status, response in responses.items():
        if not isinstance(response, dict) or "$ref" in response:
            out[status] = response
            continue
        response = dict(response)
        response.setdefault("description", "")
        schema = response.pop("schema", None)
        examples = response.pop("examples", None)
        if schema is not None:
            content = {media: {"schema": copy.deepcopy(schema)} for media in produces or ["application/json"]}
            for media, example in (examples or {}).items():
                content.setdefault(media, {})["example"] = example
            response["content"] = content
        headers = response.get("headers")
        if isinstance(headers, dict):
            converted = {}
            for name, header in headers.items():
                header = dict(header) if isinstance(header, dict) else {}
                schema_of = _schema_of_parameter(header)
                header.pop("collectionFormat", None)
                header["schema"] = schema_of
                converted[name] = header
            response["headers"] = converted
        out[status] = response
    return out


def _scheme_3(scheme: Any) -> Any:
    if not isinstance(scheme, dict):
        return scheme
    scheme = dict(scheme)
    if scheme.get("type") == "basic":
        scheme["type"], scheme["scheme"] = "http", "basic"
    elif scheme.get("type") == "oauth2":
        flow = scheme.pop("flow", None)
        urls = {k: scheme.pop(k) for k in ("authorizationUrl", "tokenUrl") if k in scheme}
        scopes = scheme.pop("scopes", {}) or {}
        name = {"accessCode": "authorizationCode", "application": "clientCredentials"}.get(flow, flow)
        if name:
            scheme["flows"] = {name: {**urls, "scopes": scopes}}
        else:
            scheme.setdefault("flows", {})
    return scheme


def swagger_to_oas30(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for item in (doc.get("paths") or {}).values():
        if isinstance(item, dict):
            if isinstance(item.get("parameters"), list):
                item["parameters"] = [_inline(p, doc, "#/parameters/") for p in item["parameters"]]
            for method in METHODS:
                op = item.get(method)
                if isinstance(op, dict):
                    if isinstance(op.get("parameters"), list):
                        op["parameters"] = [_inline(p, doc, "#/parameters/") for p in op["parameters"]]
                    if isinstance(op.get("responses"), dict):
                        op["responses"] = {s: _inline(r, doc, "#/responses/") for s, r in op["responses"].items()}
    out: dict[str, Any] = {"openapi": "3.0.1"}
    global_consumes = doc.pop("consumes", None) or []
    global_produces = doc.pop("produces", None) or []
    host, base, schemes = doc.pop("host", None), doc.pop("basePath", None), doc.pop("schemes", None)
    doc.pop("swagger", None)
    definitions = doc.pop("definitions", None)
    security = doc.pop("securityDefinitions", None)
    doc.pop("parameters", None)
    doc.pop("responses", None)
    for key, value in doc.items():
        if key == "paths":
            continue
        out[key] = value
        if key == "info" and (host or base):
            scheme = (schemes or ["https"])[0]
            out["servers"] = [{"url": f"{scheme}://{host or 'localhost'}{base or ''}"}]
    if (host or base) and "servers" not in out:
        out["servers"] = [{"url": f"{(schemes or ['https'])[0]}://{host or 'localhost'}{base or ''}"}]
    paths: dict[str, Any] = {}
    for path, item in (doc.get("paths") or {}).items():
        if not isinstance(item, dict):
            paths[path] = item
            continue
        item = dict(item)
        path_parameters = item.get("parameters")
        if isinstance(path_parameters, list):
            rest, body = _body_of(path_parameters, global_consumes)
            if body is not None:
                raise ConversionError(f"paths.{path}.parameters: a body or formData parameter for every "
                                      "operation of a path has no OpenAPI 3.0 form")
            item["parameters"] = rest
        for method in METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            op = dict(op)
            consumes = op.pop("consumes", None) or global_consumes
            produces = op.pop("produces", None) or global_produces
            op.pop("schemes", None)
            if isinstance(op.get("parameters"), list):
                rest, body = _body_of(op["parameters"], consumes)
                if rest:
                    op["parameters"] = rest
                else:
                    op.pop("parameters")
                if body is not None:
                    op["requestBody"] = body
            if "responses" in op:
                op["responses"] = _responses_3(op["responses"], produces)
            item[method] = op
        paths[path] = item
    out["paths"] = paths
    components = dict(out.pop("components", None) or {})
    if definitions is not None:
        components["schemas"] = definitions
    if security is not None:
        components["securitySchemes"] = {n: _scheme_3(s) for n, s in security.items()}
    if components:
        out["components"] = components
    return _rewrite_refs(out, "#/definitions/", "#/components/schemas/")


# -- OpenAPI 3.0 -> Swagger 2.0 -----------------------------------------------------------------------
def _parameter_2(parameter: Any, where: str) -> Any:
    if not isinstance(parameter, dict):
        return parameter
    p = dict(parameter)
    if p.get("in") == "cookie":
        raise ConversionError(f"{where}: a cookie parameter has no Swagger 2.0 form")
    schema = p.pop("schema", None) or {}
    if "content" in p:
        raise ConversionError(f"{where}: a parameter with `content` has no Swagger 2.0 form")
    style, explode = p.pop("style", None), p.pop("explode", None)
    p.pop("example", None)
    p.pop("examples", None)
    if isinstance(schema, dict) and "$ref" in schema:
        p["type"] = "string"
    elif isinstance(schema, dict):
        for key in SCHEMA_KEYS:
            if key in schema:
                p[key] = copy.deepcopy(schema[key])
    p.setdefault("type", "string")
    if p["type"] == "array":
        if explode is True or (explode is None and style in (None, "form") and p.get("in") == "query"):
            p["collectionFormat"] = "multi"
        elif style in ("spaceDelimited", "pipeDelimited"):
            p["collectionFormat"] = {"spaceDelimited": "ssv", "pipeDelimited": "pipes"}[style]
    if p.get("in") == "path":
        p["required"] = True
    return p


def _responses_2(responses: Any, produces: list[str], where: str) -> Any:
    if not isinstance(responses, dict):
        return responses
    out = {}
    for status, response in responses.items():
        if not isinstance(response, dict):
            out[status] = response
            continue
        response = dict(response)
        if "links" in response:
            raise ConversionError(f"{where}.responses.{status}.links: links have no Swagger 2.0 form")
        content = response.pop("content", None)
        if isinstance(content, dict) and content:
            media = "application/json" if "application/json" in content else next(iter(content))
            for m in content:
                if m not in produces:
                    produces.append(m)
            spec = content[media] or {}
            if "schema" in spec:
                response["schema"] = copy.deepcopy(spec["schema"])
            examples = {m: s["example"] for m, s in content.items() if isinstance(s, dict) and "example" in s}
            if examples:
                response["examples"] = examples
        headers = response.get("headers")
        if isinstance(headers, dict):
            converted = {}
            for name, header in headers.items():
                header = dict(header) if isinstance(header, dict) else {}
                schema = header.pop("schema", None) or {}
                for key in SCHEMA_KEYS:
                    if isinstance(schema, dict) and key in schema:
                        header[key] = schema[key]
                header.setdefault("type", "string")
                header.pop("required", None)
                header.pop("style", None)
                header.pop("explode", None)
                converted[name] = header
            response["headers"] = converted
        out[status] = response
    return out


def _request_body_2(body: dict[str, Any], where: str) -> tuple[list[dict[str, Any]], list[str]]:
    content = body.get("content") or {}
    if not content:
        return [], []
    media = list(content)
    form = [m for m in media if m in FORM_MEDIA]
    if form and len(form) == len(media):
        schema = (content[form[0]] or {}).get("schema") or {}
        if not isinstance(schema, dict) or schema.get("type") != "object" or "$ref" in schema:
            raise ConversionError(f"{where}.requestBody: a form body that is not an inline object schema has no "
                                  "Swagger 2.0 form")
        required = set(schema.get("required") or [])
        out = []
        for name, prop in (schema.get("properties") or {}).items():
            p: dict[str, Any] = {"name": name, "in": "formData", "required": name in required}
            prop = prop if isinstance(prop, dict) else {}
            if prop.get("type") == "string" and prop.get("format") == "binary":
                p["type"] = "file"
            else:
                for key in SCHEMA_KEYS:
                    if key in prop:
                        p[key] = copy.deepcopy(prop[key])
                p.setdefault("type", "string")
            if prop.get("description"):
                p["description"] = prop["description"]
            out.append(p)
        return out, form
    chosen = content.get("application/json") or content[media[0]] or {}
    parameter: dict[str, Any] = {"in": "body", "name": "body", "required": bool(body.get("required")),
                                 "schema": copy.deepcopy(chosen.get("schema") or {})}
    ref = parameter["schema"].get("$ref") if isinstance(parameter["schema"], dict) else None
    if isinstance(ref, str):
        parameter["name"] = ref.rsplit("/", 1)[1]
    if body.get("description"):
        parameter["description"] = body["description"]
    for key, value in body.items():
        if key.startswith("x-"):
            parameter[key] = value
    return [parameter], media


def _scheme_2(name: str, scheme: Any) -> Any:
    if not isinstance(scheme, dict):
        return scheme
    scheme = dict(scheme)
    kind = scheme.get("type")
    if kind == "http":
        if str(scheme.get("scheme", "")).lower() != "basic":
            raise ConversionError(f"components.securitySchemes.{name}: an HTTP {scheme.get('scheme')} scheme has "
                                  "no Swagger 2.0 form")
        return {k: v for k, v in scheme.items() if k not in ("scheme", "bearerFormat")} | {"type": "basic"}
    if kind == "openIdConnect":
        raise ConversionError(f"components.securitySchemes.{name}: openIdConnect has no Swagger 2.0 form")
    if kind == "oauth2":
        flows = scheme.pop("flows", None) or {}
        if len(flows) > 1:
            raise ConversionError(f"components.securitySchemes.{name}: several OAuth 2 flows have no Swagger 2.0 "
                                  "form")
        if flows:
            flow_name, flow = next(iter(flows.items()))
            scheme["flow"] = {"authorizationCode": "accessCode", "clientCredentials": "application"}.get(
                flow_name, flow_name)
            for key in ("authorizationUrl", "tokenUrl"):
                if key in flow:
                    scheme[key] = flow[key]
            scheme["scopes"] = flow.get("scopes") or {}
        elif X + "authorizer" not in scheme:
            raise ConversionError(f"components.securitySchemes.{name}: an OAuth 2 scheme with no flow has no "
                                  "Swagger 2.0 form")
    return scheme


def _servers_2(servers: Any) -> dict[str, Any]:
    if not isinstance(servers, list) or not servers or not isinstance(servers[0], dict):
        return {}
    url = str(servers[0].get("url") or "")
    for name, variable in (servers[0].get("variables") or {}).items():
        url = url.replace("{" + name + "}", str((variable or {}).get("default", "")))
    parts = urlsplit(url)
    out: dict[str, Any] = {}
    if parts.netloc:
        out["host"] = parts.netloc
    if parts.path and parts.path != "/":
        out["basePath"] = "/" + parts.path.strip("/")
    if parts.scheme:
        out["schemes"] = [parts.scheme]
    return out


def oas30_to_swagger(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    components = dict(doc.pop("components", None) or {})
    integrations = components.pop(X + "integrations", None)
    for kind in ("callbacks", "links"):
        if components.get(kind):
            raise ConversionError(f"components.{kind}: {kind} have no Swagger 2.0 form")
    out: dict[str, Any] = {"swagger": "2.0"}
    doc.pop("openapi", None)
    servers = doc.pop("servers", None)
    prefixes = ("#/components/parameters/", "#/components/responses/", "#/components/requestBodies/",
                "#/components/headers/", "#/components/examples/", "#/components/" + X + "integrations/")
    lookup = {**doc, "components": {**components, X + "integrations": integrations or {}}}
    for key, value in doc.items():
        if key == "paths":
            continue
        out[key] = value
        if key == "info":
            out.update(_servers_2(servers))
    if "info" not in doc:
        out.update(_servers_2(servers))
    paths: dict[str, Any] = {}
    for path, item in (doc.get("paths") or {}).items():
        if not isinstance(item, dict):
            paths[path] = item
            continue
        item = dict(item)
        item.pop("servers", None)
        where = f"paths.{path}"
        if isinstance(item.get("parameters"), list):
            item["parameters"] = [_parameter_2(_inline_all(p, lookup, prefixes), f"{where}.parameters")
                                  for p in item["parameters"]]
        for method in METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            op = {k: _inline_all(v, lookup, prefixes) for k, v in op.items()}
            at = f"{where}.{method}"
            if op.get("callbacks"):
                raise ConversionError(f"{at}.callbacks: callbacks have no Swagger 2.0 form")
            op.pop("servers", None)
            parameters = [_parameter_2(_inline_all(p, lookup, prefixes), f"{at}.parameters")
                          for p in op.get("parameters") or []]
            body = op.pop("requestBody", None)
            if isinstance(body, dict):
                extra, consumes = _request_body_2(_inline_all(body, lookup, prefixes), at)
                parameters += extra
                if consumes:
                    op["consumes"] = consumes
            if parameters:
                op["parameters"] = parameters
            if "responses" in op:
                produces: list[str] = []
                op["responses"] = _responses_2(op["responses"], produces, at)
                if produces:
                    op["produces"] = produces
            item[method] = op
        paths[path] = item
    out["paths"] = paths
    if components.get("schemas") is not None:
        out["definitions"] = components.pop("schemas")
    if components.get("securitySchemes") is not None:
        out["securityDefinitions"] = {n: _scheme_2(n, s) for n, s in components.pop("securitySchemes").items()}
    for kind in ("parameters", "responses", "requestBodies", "headers", "examples"):
        components.pop(kind, None)
    if components:
        names = ", ".join(sorted(components))
        raise ConversionError(f"components ({names}): no Swagger 2.0 form")
    return _rewrite_refs(out, "#/components/schemas/", "#/definitions/")


def _inline_all(node: Any, doc: dict[str, Any], prefixes: tuple[str, ...]) -> Any:
    """Every reference into one of `prefixes`, at any depth, replaced by its target (schemas stay references)."""
    if isinstance(node, list):
        return [_inline_all(v, doc, prefixes) for v in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(prefixes):
        for prefix in prefixes:
            if ref.startswith(prefix):
                return _inline_all(_inline(node, doc, prefix), doc, prefixes)
    return {k: _inline_all(v, doc, prefixes) for k, v in node.items()}


def convert(doc: dict[str, Any], version: str) -> dict[str, Any]:
    """The document in `version` ("oas30" or "swagger"); as it is when it already is."""
    if version == "swagger" and "openapi" in doc:
        return oas30_to_swagger(doc)
    if version == "oas30" and "swagger" in doc:
        return swagger_to_oas30(doc)
    return doc
