"""Schemathesis against the real server: generated requests for every documented operation,
sent to Cortex under gunicorn+gevent, each answer checked against the OpenAPI document.

For every operation, positive cases (bodies and parameters valid by the document) and, where
there is something to break, negative ones. Every answer must be: no 5xx (a working fake
upstream answers, so no 503 is legitimate here), a documented status with its documented media
type, headers and schema; a valid body accepted (2xx, or 404 for a model or provider nobody
serves), an invalid one refused with a 4xx; and no traceback text or secret (the upstream key,
the client key, the admin token) anywhere in it. Then explicit edge cases the generator would
rarely find: invalid UTF-8, huge numbers, 10,000-deep nesting, wrong types, empty and enormous
bodies. The gateway's log is checked for tracebacks at teardown, and for the secrets here.

FUZZ_EXAMPLES (default 250) is the number of generated cases per chat operation and mode (a
fifth of it again from the unfocused document, an eighth for the other operations): about
2,200 requests in 80 s, most of it hypothesis generating them; raise it for a longer run by
hand: FUZZ_EXAMPLES=2000 pytest -s tests/live/test_fuzz.py (prints the count)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema_rs
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core import NOT_SET
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.openapi import document
from tests.api.test_openapi import EXPECTED_MISSING_ROUTES
from tests.fakes.factory import fake_factory
from tests.fakes.openai_server import FakeOpenAI
from tests.gateway_process import GatewayProcess, gateway_factory
from tests.live.helpers import toml_worker

pytestmark = pytest.mark.live

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "250"))
UPSTREAM_KEY = "sk-fuzz-UPSTREAM-3f9a7c1e5b"
LIMITED_KEY = "sk-fuzz-LIMITED-6b1d8f2a4c"
CLIENT_KEY = "ck-fuzz-CLIENT-8d2e4a6b0c"
ADMIN_TOKEN = "adm-fuzz-TOKEN-5c7e9a1b3d"
SECRETS = (UPSTREAM_KEY, LIMITED_KEY, CLIENT_KEY, ADMIN_TOKEN)
FORBIDDEN_TEXT = ("Traceback (most recent call last)", 'File "/', "OverflowError", "RecursionError")

DOCUMENT = document()


def closed(schema: Any) -> Any:
    """A copy of `schema` whose objects allow no properties beyond those they list."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    copy = {key: closed(value) for key, value in schema.items()}
    if "properties" in schema and "additionalProperties" not in schema:
        copy["additionalProperties"] = False
    return copy


def focused(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with the chat bodies closed to unknown fields. Generating the random extra
    fields the real document allows costs most of the generator's time, so most cases come from
    this variant: every body valid here is valid in the real document, and a negative case whose
    only fault is an extra field is not held against the app (schemathesis knows that case)."""
    schemas = doc["components"]["schemas"]
    names = ("NativeChatRequest", "OpenAIChatRequest", "Content")
    return {
        **doc,
        "components": {**doc["components"], "schemas": {**schemas, **{n: closed(schemas[n]) for n in names}}},
    }


#: What the checks accept besides their own defaults: a body past MAX_BODY_BYTES is refused with
#: a 413 whether or not it is valid (a size JSON Schema cannot state), which schemathesis'
#: defaults count neither as a rejection nor as an acceptance.
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            "negative_data_rejection": {"expected-statuses": ["400", "401", "404", "405", "409", "413", "415", "422"]},
            "positive_data_acceptance": {"expected-statuses": ["2xx", "401", "404", "409", "413", "429"]},
        }
    }
)


def operations(doc: dict[str, Any]) -> dict[str, schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_dict(doc, config=CONFIG)
    return {op.label: op for op in (result.ok() for result in schema.get_all_operations())}


OPERATIONS = operations(DOCUMENT)
FOCUSED = operations(focused(DOCUMENT))
ADMIN = {label for label, op in OPERATIONS.items() if op.path.startswith("/api/admin")}
CHAT = {label for label in OPERATIONS if "/chat" in label}


def _negatable(label: str) -> bool:
    """Negative cases need something to break: a body, or a parameter with a constraint (any
    string is a valid `filename`)."""
    op = OPERATIONS[label]
    spec = DOCUMENT["paths"][op.path][op.method.lower()]
    return "requestBody" in spec or any(p["schema"] != {"type": "string"} for p in spec.get("parameters", []))


MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
#: (operation, mode, document variant, examples): the chat operations get most of the budget.
CASES = [
    *[(label, mode, "focused", EXAMPLES) for label in sorted(CHAT) for mode in MODES],
    *[(label, mode, "document", max(1, EXAMPLES // 5)) for label in sorted(CHAT) for mode in MODES],
    *[
        (label, mode, "document", max(1, EXAMPLES // 8))
        for label in OPERATIONS
        if label not in CHAT
        for mode in MODES
        if mode is GenerationMode.POSITIVE or _negatable(label)
    ],
]
COUNTS: dict[str, int] = {"requests": 0}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One gateway for the whole module: two gevent worker processes, client keys and the admin
    API on. Workers: the built-in demo (no delay; first by priority, so most generated chats
    are quick), a fake OpenAI-compatible upstream that answers with a key of its own, and one
    whose upstream rate limits its key (to draw the key into error paths)."""
    with fake_factory(FakeOpenAI) as make_fake, gateway_factory(tmp_path_factory.mktemp("fuzz")) as make_gateway:
        answering = make_fake(valid_keys={UPSTREAM_KEY})
        limiting = make_fake()
        limiting.rate_limited_keys[LIMITED_KEY] = "30"
        toml = (
            toml_worker(name="demo", provider="demo", base_url="http://127.0.0.1:9/unused", priority=0)
            + toml_worker(name="fuzzed", base_url=answering.base_url, models=["fake-model"], api_keys=[UPSTREAM_KEY])
            + toml_worker(name="limited", base_url=limiting.base_url, models=["limited-model"], api_keys=[LIMITED_KEY])
        )
        env = {
            "CORTEX_API_KEYS": CLIENT_KEY,
            "CORTEX_ADMIN_TOKEN": ADMIN_TOKEN,
            "DEMO_DELAY_MS": "0",
            "CONNECT_TIMEOUT": "1",
            "HEALTH_CHECK_TIMEOUT": "1",
            "LOG_LEVEL": "warning",
        }
        process = make_gateway(toml, env, workers=2)
        yield process
        log = process.log()
        assert not [s for s in SECRETS if s in log], "a secret reached the gateway's log"


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def body_validator(label: str) -> Callable[[Any], bool]:
    """Whether a body is valid in the real document (not its focused variant)."""
    op = OPERATIONS[label]
    body = DOCUMENT["paths"][op.path][op.method.lower()].get("requestBody")
    if body is None:
        return lambda _: False
    schema = {**body["content"]["application/json"]["schema"], "components": DOCUMENT["components"]}
    validator = jsonschema_rs.validator_for(schema)

    def valid(value: Any) -> bool:
        if value is NOT_SET:
            return False
        try:
            return validator.is_valid(value)
        except ValueError:  # not representable as JSON (e.g. a lone surrogate): keep the case negative
            return False

    return valid


def headers_for(label: str) -> dict[str, str]:
    token = ADMIN_TOKEN if label in ADMIN else CLIENT_KEY
    return {"Authorization": f"Bearer {token}"}


def assert_clean(response: requests.Response | Any) -> None:
    """No traceback, no secret, in the body or a header."""
    text = response.content.decode("utf-8", "replace") + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    for needle in (*SECRETS, *FORBIDDEN_TEXT):
        assert needle not in text, f"{needle!r} in an answer: {text[:500]}"


def checks_for(label: str, mode: GenerationMode) -> list[Callable[..., Any]]:
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ]
    if mode is GenerationMode.NEGATIVE:
        checks.append(negative_data_rejection)
    elif label not in ADMIN:  # a valid worker table may still be refused (422): names an unset env var...
        checks.append(positive_data_acceptance)
    return checks


@pytest.mark.parametrize(
    ("label", "mode", "variant", "examples"), CASES, ids=[f"{c[2]}-{c[1].value}-{c[0]}" for c in CASES]
)
def test_generated_requests_match_the_document(live, session, label, mode, variant, examples):
    operation = (FOCUSED if variant == "focused" else OPERATIONS)[label]
    if (operation.method.upper(), operation.path) in EXPECTED_MISSING_ROUTES:
        pytest.skip("documented, but its route is not on this branch yet (EXPECTED_MISSING_ROUTES)")
    checks = checks_for(label, mode)
    headers = headers_for(label)
    valid_body = body_validator(label)

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,  # no .hypothesis/ directory; a failure prints its example
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failure is reported as is
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=live.url, session=session, headers=headers, timeout=10)
        COUNTS["requests"] += 1
        negated_only_by_focus = mode is GenerationMode.NEGATIVE and variant == "focused" and valid_body(case.body)
        if negated_only_by_focus:  # an extra field the real document allows: a positive case after all
            case.validate_response(response, checks=checks_for(label, GenerationMode.POSITIVE), headers=headers)
        else:
            case.validate_response(response, checks=checks, headers=headers)
        assert_clean(response)

    run()


# --- explicit edges, sent as raw bytes --------------------------------------------------------


def nested(depth: int) -> bytes:
    return b'{"messages": ' + b"[" * depth + b"]" * depth + b"}"


HI = b'{"messages": [{"role": "user", "content": "hi"}]'
EDGES: dict[str, bytes] = {
    "invalid UTF-8": b'{"messages": [{"role": "user", "content": "\xff\xfe\xfd"}]}',
    "a lone continuation byte": b'{"messages": [{"role": "user", "content": "\x80"}]}',
    "empty": b"",
    "NUL bytes": b"\x00" * 64,
    "1e400": HI + b', "temperature": 1e400}',
    "-1e400 top_p": HI + b', "top_p": -1e400}',
    "10**1000 max_tokens": HI + b', "max_tokens": 1' + b"0" * 1000 + b"}",
    "10**1000 temperature": HI + b', "temperature": 1' + b"0" * 1000 + b"}",
    "5000-digit int": HI + b', "n": ' + b"9" * 5000 + b"}",
    "NaN": HI + b', "temperature": NaN}',
    "Infinity": HI + b', "top_p": Infinity}',
    "10,000-deep arrays": nested(10_000),
    "10,000-deep objects": b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    "10,000-deep unclosed": b"[" * 10_000,
    "wrong types": b'{"messages": {"role": "user"}, "model": 7, "stream": "yes", "stop": [1, 2]}',
    "messages null": b'{"messages": null}',
    "a string body": b'"hello"',
    "a number body": b"42",
}


@pytest.mark.parametrize("path", ["/api/chat", "/api/chat/complete", "/v1/chat/completions"])
def test_explicit_edges_are_documented_4xx(live, session, path):
    for name, body in EDGES.items():
        response = session.post(
            live.url + path, data=body, headers={**headers_for(path), "Content-Type": "application/json"}
        )
        COUNTS["requests"] += 1
        assert response.status_code == 400, (name, response.status_code, response.text[:300])
        assert response.headers["Content-Type"].startswith("application/json"), name
        error = response.json()["error"]
        assert isinstance(error, dict if path.startswith("/v1") else str), name
        assert_clean(response)


@pytest.mark.parametrize("path", ["/api/chat", "/api/chat/complete", "/v1/chat/completions"])
def test_enormous_bodies_are_413(live, session, path):
    big = b'{"messages": [{"role": "user", "content": "hi", "pad": "' + b"x" * (2 << 20) + b'"}]}'
    for extra in ({}, {"Transfer-Encoding": "chunked"}):
        data: Any = big if not extra else iter([big[i : i + 65536] for i in range(0, len(big), 65536)])
        try:
            response = session.post(
                live.url + path, data=data, headers={**headers_for(path), "Content-Type": "application/json", **extra}
            )
        except requests.ConnectionError:
            continue  # the server may answer 413 and close before the whole body is sent
        COUNTS["requests"] += 1
        assert response.status_code == 413, (extra, response.status_code, response.text[:300])
        assert_clean(response)


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
def test_wrong_content_type_is_415(live, session, path):
    response = session.post(live.url + path, data=HI + b"}", headers={**headers_for(path), "Content-Type": "text/xml"})
    assert response.status_code == 415
    assert_clean(response)


UPSTREAM_ROUTES = [
    ("/api/chat", {}),
    ("/api/chat", {"stream_format": "sse"}),
    ("/api/chat/complete", {}),
    ("/v1/chat/completions", {}),
    ("/v1/chat/completions", {"stream": True, "stream_options": {"include_usage": True}}),
]


@pytest.mark.parametrize(("path", "extra"), UPSTREAM_ROUTES)
@pytest.mark.parametrize(
    ("target", "status"), [({"model": "fake-model"}, 200), ({"model": "limited/limited-model"}, 429)]
)
def test_keyed_upstreams_answer_without_leaking_their_keys(live, session, path, extra, target, status):
    """Through the upstream that answers with its key, and the one that rate limits it: the
    answer (or the 429 listing every attempt) matches the document and names no key."""
    body = {"messages": [{"role": "user", "content": "hi"}], **target, **extra}
    response = session.post(live.url + path, json=body, headers=headers_for(path))
    COUNTS["requests"] += 1
    assert response.status_code == status, response.text[:300]
    if status == 200:
        assert response.headers.get("X-Cortex-Worker", "fuzzed") == "fuzzed"
    else:
        assert response.headers["Retry-After"].isdigit()
    operation = OPERATIONS[f"POST {path}"]
    operation.validate_response(response)
    assert_clean(response)


def test_the_gateway_still_answers_and_counts(live, session):
    """After everything above, a plain request still works; report how much was sent."""
    started = time.monotonic()
    response = session.post(
        live.url + "/v1/chat/completions",
        json={"model": "fake-model", "messages": [{"role": "user", "content": "still there?"}]},
        headers=headers_for("/v1"),
    )
    assert response.status_code == 200, response.text[:300]
    assert time.monotonic() - started < 5
    print(f"\nfuzz: {COUNTS['requests']} requests in this module")
