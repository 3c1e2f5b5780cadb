"""The OpenAPI document (GET /openapi.json) stays true: it lists exactly the app's routes, it is
valid OpenAPI 3.1, real answers match their documented status, media type, headers and schema,
and the edges of a request body (size, type, encoding, nesting, numbers) are clean 4xx."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.openapi import document
from app.validation import MAX_JSON_DEPTH, MAX_MESSAGES, _too_deep

ADMIN_TOKEN = "admin-token-for-openapi-tests"
CLIENT_KEY = "sk-cortex-openapi-client"
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}

#: Documented operations whose routes are built on other branches (the admin API and /metrics).
#: Empty this set once they are merged: the route test then checks them like every other one.
EXPECTED_MISSING_ROUTES: frozenset[tuple[str, str]] = frozenset()


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return document()


def _validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema_rs.Validator:
    """A validator for `schema` whose `#/components/...` references resolve in `doc`."""
    return jsonschema_rs.validator_for({**schema, "components": doc["components"]}, validate_formats=True)


def assert_documented(doc: dict[str, Any], method: str, path: str, response: Any) -> None:
    """`response` (a Flask test response) has a documented status, media type, required headers
    and, for JSON, a body valid against the documented schema."""
    response.get_data()  # a stream runs to its end (its request log and metrics land now, not at GC)
    response.close()
    operation = doc["paths"][path][method.lower()]
    status = str(response.status_code)
    assert status in operation["responses"], f"{method} {path}: status {status} is not documented"
    answer = operation["responses"][status]
    media, content = response.mimetype, answer.get("content", {})
    wildcards = ("*/*", media.split("/")[0] + "/*")
    assert media in content or any(w in content for w in wildcards), f"{method} {path} {status}: {media} undocumented"
    for name, header in answer["headers"].items():
        if header.get("required"):
            assert name in response.headers, f"{method} {path} {status}: header {name} missing"
    if media == "application/json":
        _validator(doc, answer["content"][media]["schema"]).validate(response.get_json())
    if media == "text/event-stream":
        for event in sse_events(response.get_data()):
            assert_event_documented(doc, answer["content"][media]["schema"], event)


def sse_events(body: bytes) -> list[dict[str, str]]:
    """Events as an SSE parser hands them over (our encoders write `\n` line ends only)."""
    events = []
    for block in body.decode("utf-8").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if line and not line.startswith(":"))
        if fields:
            events.append({"event": fields.get("event", "message"), "data": fields["data"]})
    return events


def assert_event_documented(doc: dict[str, Any], schema: dict[str, Any], event: dict[str, str]) -> None:
    """The event against its schema, and its `data` JSON against the `contentSchema` it names
    (an annotation JSON Schema validators do not check by themselves)."""
    _validator(doc, schema).validate(event)
    name = schema["$ref"].rsplit("/", 1)[1]
    data_schema = doc["components"]["schemas"][name]["properties"]["data"]
    if event["data"] == "[DONE]":
        return
    content = (
        data_schema.get("contentSchema")
        or next(s for s in data_schema["anyOf"] if "contentSchema" in s)["contentSchema"]
    )
    _validator(doc, content).validate(json.loads(event["data"]))


def flask_rules(app: Any) -> set[tuple[str, str]]:
    """Every (method, path) the app routes, in OpenAPI's template syntax (`<int:n>` -> `{n}`)."""
    found = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        found |= {(method, path) for method in rule.methods - {"HEAD", "OPTIONS"}}
    return found


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item}


# --- the document against the routes -------------------------------------------------------


def test_every_route_is_documented_and_every_documented_path_is_a_route(make_client, doc):
    app = make_client(env={"CORTEX_ADMIN_TOKEN": ADMIN_TOKEN, "CORTEX_API_KEYS": CLIENT_KEY}).application
    routes, described = flask_rules(app), documented(doc)
    assert EXPECTED_MISSING_ROUTES <= described
    assert routes - described == set(), "routes missing from the OpenAPI document"
    assert described - EXPECTED_MISSING_ROUTES - routes == set(), "documented operations without a route"
    arrived = EXPECTED_MISSING_ROUTES & routes
    assert not arrived, f"these routes exist now: remove them from EXPECTED_MISSING_ROUTES: {sorted(arrived)}"


def test_the_served_document_is_the_document(client, doc):
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json() == json.loads(json.dumps(doc))
    assert client.get("/openapi.json").data == response.data  # built once, served as is


# --- the document is valid OpenAPI 3.1 -----------------------------------------------------


def test_document_is_valid_openapi_3_1(doc):
    assert doc["openapi"] == "3.1.0"
    schema = schemathesis.openapi.from_dict(doc)
    schema.validate()  # the OpenAPI 3.1 meta-schema (raises jsonschema_rs.ValidationError)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} == documented(doc)


def test_the_validity_check_bites():
    broken = {"openapi": "3.1.0", "info": {"title": "x"}, "paths": {"/x": {"get": {"responses": "no"}}}}
    with pytest.raises(jsonschema_rs.ValidationError):
        schemathesis.openapi.from_dict(broken).validate()


def test_every_component_schema_is_valid_json_schema_2020_12(doc):
    for name, schema in doc["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid({"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}), name


def test_every_reference_resolves(doc):
    text = json.dumps(doc)
    for kind, names in doc["components"].items():
        for name in names:
            text = text.replace(f'"#/components/{kind}/{name}"', '"ok"')
    assert "#/components/" not in text


def test_request_schemas_carry_the_validators_limits(doc):
    schemas = doc["components"]["schemas"]
    for name in ("NativeChatRequest", "OpenAIChatRequest"):
        assert schemas[name]["properties"]["messages"]["maxItems"] == MAX_MESSAGES
        _validator(doc, {"$ref": f"#/components/schemas/{name}"}).validate(schemas[name]["example"])
    assert str(MAX_JSON_DEPTH) in doc["info"]["description"]


# --- real answers match the document -------------------------------------------------------


@pytest.fixture
def secured(make_client):  # type: ignore[no-untyped-def]
    return make_client(env={"CORTEX_API_KEYS": CLIENT_KEY})


AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


def test_status_answers_match(client, make_client, doc):
    assert_documented(doc, "GET", "/api/health", client.get("/api/health"))
    no_workers = make_client(env={"DEMO_PROVIDER": "off"}).get("/api/health")
    assert no_workers.status_code == 503
    assert_documented(doc, "GET", "/api/health", no_workers)
    assert_documented(doc, "GET", "/api/providers", client.get("/api/providers"))
    assert_documented(doc, "GET", "/v1/models", client.get("/v1/models"))
    assert_documented(doc, "GET", "/openapi.json", client.get("/openapi.json"))
    assert_documented(doc, "GET", "/", client.get("/"))
    assert_documented(doc, "GET", "/static/{filename}", client.get("/static/chat.js"))
    assert_documented(doc, "GET", "/static/{filename}", client.get("/static/nothing-here.js"))


def test_chat_answers_match(secured, doc):
    complete = secured.post("/api/chat/complete", json=CHAT, headers=AUTH)
    assert complete.status_code == 200
    assert_documented(doc, "POST", "/api/chat/complete", complete)
    for extra, media in (({}, "text/plain"), ({"stream_format": "sse"}, "text/event-stream")):
        streamed = secured.post("/api/chat", json={**CHAT, **extra}, headers=AUTH)
        assert streamed.mimetype == media
        assert_documented(doc, "POST", "/api/chat", streamed)
    for stream, media in ((False, "application/json"), (True, "text/event-stream")):
        body = {**CHAT, "stream": stream, "stream_options": {"include_usage": True}}
        answer = secured.post("/v1/chat/completions", json=body, headers=AUTH)
        assert answer.status_code == 200 and answer.mimetype == media
        assert_documented(doc, "POST", "/v1/chat/completions", answer)


NATIVE_CHAT_PATHS = ("/api/chat", "/api/chat/complete")
CHAT_PATHS = (*NATIVE_CHAT_PATHS, "/v1/chat/completions")


@pytest.mark.parametrize("path", CHAT_PATHS)
@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        (AUTH, {"messages": []}, 400),
        (AUTH, {**CHAT, "model": "nobody-serves-this"}, 404),
        ({**AUTH, "Content-Type": "text/plain"}, b'{"messages": []}', 415),
        ({}, CHAT, 401),
        ({"Authorization": "Bearer wrong-key-0000"}, CHAT, 401),
    ],
)
def test_error_answers_match(secured, doc, path, headers, body, status):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = secured.post(path, data=data, headers={"Content-Type": "application/json", **headers})
    assert response.status_code == status
    assert_documented(doc, "POST", path, response)


@pytest.mark.parametrize("path", CHAT_PATHS)
def test_too_large_matches(make_client, doc, path):
    client = make_client(env={"MAX_BODY_BYTES": "2048"})
    response = client.post(path, json={"messages": [{"role": "user", "content": "x" * 4096}]})
    assert response.status_code == 413
    assert_documented(doc, "POST", path, response)


@pytest.mark.parametrize("path", CHAT_PATHS)
def test_no_worker_answers_match(make_client, doc, path, refused_url):
    toml = f'[[workers]]\nname = "gone"\nbase_url = "{refused_url}"\nmodels = ["m"]\n'
    response = make_client(env={"DEMO_PROVIDER": "off", "MAX_ATTEMPTS": "1"}, toml=toml).post(path, json=CHAT)
    assert response.status_code == 503
    assert_documented(doc, "POST", path, response)


@pytest.mark.parametrize("path", CHAT_PATHS)
def test_rate_limited_answers_match(make_client, doc, path, fake_openai):
    upstream = fake_openai()
    upstream.rate_limited_keys["sk-limited-key-1"] = "30"
    toml = f'[[workers]]\nname = "limited"\nbase_url = "{upstream.base_url}"\nmodels = ["m"]\napi_keys = ["sk-limited-key-1"]\n'
    response = make_client(env={"DEMO_PROVIDER": "off"}, toml=toml).post(path, json=CHAT)
    assert response.status_code == 429
    assert_documented(doc, "POST", path, response)
    assert "sk-limited-key-1" not in response.get_data(as_text=True)


def test_sse_events_are_checked_against_their_data_schema(doc):
    """The SSE check bites: a `done` event without its fields, a chunk of the wrong object."""
    with pytest.raises(jsonschema_rs.ValidationError):
        assert_event_documented(doc, {"$ref": "#/components/schemas/NativeSSEEvent"}, {"event": "done", "data": "{}"})
    chunk = '{"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": []}'
    with pytest.raises(jsonschema_rs.ValidationError):
        assert_event_documented(
            doc, {"$ref": "#/components/schemas/OpenAISSEEvent"}, {"event": "message", "data": chunk}
        )


def test_a_refusal_after_keepalives_is_a_documented_sse_error_event(doc):
    """A 503 that arrives inside an SSE stream (after keep-alives) is an `error` event."""
    event = {"event": "error", "data": '{"error":"no_workers_available","message":"m","status":503,"retry_after":5}'}
    assert_event_documented(doc, {"$ref": "#/components/schemas/NativeSSEEvent"}, event)


@pytest.mark.parametrize(("path", "shape"), [("/api/health", "NativeError"), ("/v1/models", "OpenAIError")])
def test_method_not_allowed_is_the_family_error_shape(client, doc, path, shape):
    response = client.delete(path)
    assert response.status_code == 405 and "GET" in response.headers["Allow"]
    _validator(doc, {"$ref": f"#/components/schemas/{shape}"}).validate(response.get_json())


# --- the edges of a body: each a 4xx in the documented shape, never a 500 ------------------


def nested(depth: int) -> bytes:
    return b'{"messages": ' + b"[" * depth + b"]" * depth + b"}"


EDGE_BODIES = {
    "invalid UTF-8": (b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', 400),
    "overlong UTF-8": (b'{"messages": [{"role": "user", "content": "\xc0\xaf"}]}', 400),
    "empty": (b"", 400),
    "only whitespace": (b" \r\n\t ", 400),
    "not an object": (b"[1, 2]", 400),
    "truncated": (b'{"messages": [', 400),
    "NaN": (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', 400),
    "Infinity": (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": -Infinity}', 400),
    "1e400 temperature": (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 1e400}', 400),
    "1e400 max_tokens": (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e400}', 400),
    "huge int temperature": (
        b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 1' + b"0" * 1000 + b"}",
        400,
    ),
    "huge int top_p": (b'{"messages": [{"role": "user", "content": "hi"}], "top_p": -1' + b"0" * 1000 + b"}", 400),
    "huge int max_tokens": (
        b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 9' * 1 + b"9" * 1000 + b"}",
        400,
    ),
    "int past 4300 digits": (
        b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": ' + b"7" * 5000 + b"}",
        400,
    ),
    f"nested {MAX_JSON_DEPTH + 1}": (nested(MAX_JSON_DEPTH), 400),
    "nested 10,000 arrays": (nested(10_000), 400),
    "nested 10,000 objects": (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, 400),
    "100,000 unclosed brackets": (b"[" * 100_000, 400),
    "wrong types": (b'{"messages": "hi", "temperature": "hot", "max_tokens": true}', 400),
    "role not a string": (b'{"messages": [{"role": ["user"], "content": "hi"}]}', 400),
    "content an object": (b'{"messages": [{"role": "user", "content": {"text": "hi"}}]}', 400),
    "too many messages": (
        json.dumps({"messages": [{"role": "user", "content": "a"}] * (MAX_MESSAGES + 1)}).encode(),
        400,
    ),
    "lone surrogate in model": (b'{"messages": [{"role": "user", "content": "hi"}], "model": "\\ud800"}', 400),
}


@pytest.mark.parametrize("path", CHAT_PATHS)
@pytest.mark.parametrize("case", EDGE_BODIES)
def test_body_edges_are_clean_errors(client, doc, path, case):
    body, status = EDGE_BODIES[case]
    response = client.post(path, data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert_documented(doc, "POST", path, response)
    assert "Traceback" not in response.get_data(as_text=True)


def test_deep_nesting_is_named_as_such(client):
    response = client.post("/api/chat/complete", data=nested(10_000), headers={"Content-Type": "application/json"})
    assert f"nested more than {MAX_JSON_DEPTH} levels" in response.get_json()["details"]


@pytest.mark.parametrize("path", CHAT_PATHS)
def test_content_nested_as_deep_as_allowed_is_fine(client, path):
    """Depth 5 (body, messages, message, parts, part) is what a real chat needs."""
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "[[[{{{"}]}], "max_tokens": 2}
    response = client.post(path, json=body)
    response.get_data()
    response.close()
    assert response.status_code == 200


@pytest.mark.parametrize("path", CHAT_PATHS)
def test_a_lone_surrogate_in_content_is_not_a_500(client, path):
    body = b'{"messages": [{"role": "user", "content": "\\ud800 hi"}], "max_tokens": 2}'
    response = client.post(path, data=body, headers={"Content-Type": "application/json"})
    response.get_data()
    response.close()
    assert response.status_code in (200, 400)


@pytest.mark.parametrize(
    ("field", "value", "status"),
    [
        ("max_tokens", 3.0, 200),  # an integer, as JSON Schema counts them
        ("max_tokens", 3.5, 400),
        ("n", True, 400),
        ("n", 1.0, 200),
        ("max_tokens", "x", 400),  # checked even when max_completion_tokens is valid
    ],
)
def test_openai_integers_follow_json_schema(client, field, value, status):
    body = {**CHAT, "max_completion_tokens": 4, field: value}
    response = client.post("/v1/chat/completions", json=body)
    response.close()
    assert response.status_code == status


# --- the nesting bound, judged before parsing, agrees with the parsed depth ----------------

JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=6)


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


def deep(leaf: Any, levels: list[bool]) -> Any:
    for is_object in levels:
        leaf = {"[k{": leaf} if is_object else [leaf]
    return leaf


@settings(max_examples=300, database=None, deadline=None)
@given(
    value=st.recursive(
        JSON_LEAVES,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text('[]{}"\\k', max_size=4), inner, max_size=3),
        max_leaves=20,
    ),
    levels=st.lists(st.booleans(), max_size=40),
)
@example(value="[[[", levels=[True] * MAX_JSON_DEPTH)  # exactly the limit: accepted
@example(value=[], levels=[False, True] * (MAX_JSON_DEPTH // 2))  # one past it: refused
def test_the_nesting_bound_matches_the_parsed_depth(value, levels):
    """Brackets inside strings and escaped quotes do not fool it; objects and arrays count alike."""
    data = json.dumps(deep(value, levels)).encode()
    assert _too_deep(data, MAX_JSON_DEPTH) == (depth(deep(value, levels)) > MAX_JSON_DEPTH)
