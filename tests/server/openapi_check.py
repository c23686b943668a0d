"""Checks hllm-creatord responses against proto/openapi.yaml (PyYAML + jsonschema).

validate(method, path, status, headers, body) -> list of problems (empty: conforms):
- a path the spec lacks must answer 404, a method its path lacks 405, both with the Error body,
  or 401 with WWW-Authenticate (API keys are checked first; the spec's info.description);
- the status must be one the operation lists; headers the response marks `required` must be
  there; the media type must be one the response lists;
- a JSON body must validate against its schema (OpenAPI 3.0: $ref resolved, `nullable` turned
  into a null type); a text/event-stream body is parsed into events, each named in the media
  type's `x-events` and its data valid against that schema.
SEEN holds every (path, method, status) checked, for coverage checks. SPEC_PROBLEMS: what
openapi-spec-validator finds wrong with the spec itself."""
import copy
import json
import os

import jsonschema
import yaml

SPEC_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto",
                         "openapi.yaml")
with open(SPEC_PATH) as f:
    SPEC = yaml.safe_load(f)
SEEN = set()
# the spec itself against the OpenAPI 3.0 schema (openapi-spec-validator: tools/requirements.txt)
from openapi_spec_validator import validate as _spec_validate  # noqa: E402

SPEC_PROBLEMS = []
try:
    _spec_validate(SPEC)
except Exception as e:  # noqa: BLE001  its exceptions vary by version
    SPEC_PROBLEMS.append(str(e)[:2000])


def _resolve(node, depth=0):
    if depth > 50:
        raise ValueError("openapi.yaml: $ref nesting too deep")
    if isinstance(node, dict):
        if "$ref" in node:
            ref = node["$ref"]
            if not ref.startswith("#/"):
                raise ValueError("openapi.yaml: external $ref %s" % ref)
            target = SPEC
            for part in ref[2:].split("/"):
                target = target[part]
            return _resolve(target, depth + 1)
        out = {k: _resolve(v, depth + 1) for k, v in node.items()}
        if out.pop("nullable", False) and "type" in out:
            t = out["type"]
            out["type"] = (t if isinstance(t, list) else [t]) + ["null"]
            if "enum" in out:
                out["enum"] = list(out["enum"]) + [None]
        return out
    if isinstance(node, list):
        return [_resolve(v, depth + 1) for v in node]
    return node


def _schema_problems(schema, value, what):
    s = _resolve(copy.deepcopy(schema))
    s.pop("x-events", None)
    v = jsonschema.Draft7Validator(s)
    return ["%s: %s at %s" % (what, e.message[:300], "/".join(str(p) for p in e.absolute_path))
            for e in v.iter_errors(value)]


def _sse_events(data):
    events, name, datas = [], "message", []
    for line in data.split("\n"):
        if line == "":
            if datas:
                events.append((name, "\n".join(datas)))
            name, datas = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                datas.append(value)
    return events


def _error_body(body, what):
    try:
        b = json.loads(body)
    except ValueError:
        return ["%s: the body is not JSON: %r" % (what, body[:200])]
    return _schema_problems(SPEC["components"]["schemas"]["Error"], b, what) + (
        [] if isinstance(b, dict) and isinstance(b.get("error"), str) else
        ["%s: no error string" % what])


def validate(method, path, status, headers, body):
    """headers: {lowercase name: value}; body: bytes."""
    method = method.lower()
    path = path.split("?", 1)[0]
    what = "%s %s -> %d" % (method.upper(), path, status)
    text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else body
    item = SPEC["paths"].get(path)
    op = item and item.get(method if method != "head" else "get")
    if op is None and status == 401:  # API keys are checked before the path and the method
        SEEN.add((path if item else "?", method, status))
        return _error_body(text, what) + ([] if "www-authenticate" in headers else
                                          ["%s: 401 without WWW-Authenticate" % what])
    if item is None:
        SEEN.add(("?", method, status))
        if status != 404:
            return ["%s: a path the spec lacks must answer 404" % what]
        return _error_body(text, what)
    if op is None:
        SEEN.add((path, method, status))
        if status != 405:
            return ["%s: a method the spec lacks for this path must answer 405" % what]
        return _error_body(text, what)
    SEEN.add((path, method, status))
    resp = op["responses"].get(str(status)) or op["responses"].get("default")
    if resp is None:
        return ["%s: status %d is not in the spec (%s)" % (what, status,
                                                            sorted(op["responses"]))]
    resp = _resolve(resp)
    problems = []
    for h, hdef in (resp.get("headers") or {}).items():
        if hdef.get("required") and h.lower() not in headers:
            problems.append("%s: the required header %s is missing" % (what, h))
    content = resp.get("content")
    if not content or method == "head":
        return problems
    ctype = headers.get("content-type", "").split(";")[0].strip()
    media = content.get(ctype)
    if media is None:
        return problems + ["%s: content type %r is not one of %s" % (what, ctype, sorted(content))]
    if ctype == "application/json":
        try:
            b = json.loads(text)
        except ValueError:
            return problems + ["%s: the body is not JSON: %r" % (what, text[:200])]
        problems += _schema_problems(media.get("schema", {}), b, what)
    elif ctype == "text/event-stream":
        evs = media.get("x-events", {})
        for name, data in _sse_events(text):
            if name not in evs:
                problems.append("%s: event %r is not in x-events %s" % (what, name, sorted(evs)))
                continue
            try:
                d = json.loads(data)
            except ValueError:
                problems.append("%s: event %s: data is not JSON" % (what, name))
                continue
            problems += _schema_problems(evs[name], d, "%s event %s" % (what, name))
    return problems
