"""Error classification: Retry-After, HTTP status kinds, and every requests exception mapped."""

from __future__ import annotations

import inspect

import pytest
import requests
import urllib3.exceptions
from requests import exceptions as rex

from providers.errors import ErrorKind, UpstreamError, kind_for_status, parse_retry_after
from providers.http import mask_key, scrub
from providers.transport import EXCEPTION_KINDS, classify_exception

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-1", None),
        ("nan", None),
        ("inf", None),
        ("", None),
        (None, None),
        ("soon", None),
        ("Fri, 15 Jan 2027 08:00:10 GMT", 10.0),
        ("Fri, 15 Jan 2027 07:00:00 GMT", 0.0),  # in the past
    ],
)
def test_parse_retry_after(value, expected):
    # NOW is 2027-01-15T08:00:00Z
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, ErrorKind.BAD_REQUEST), (401, ErrorKind.AUTH), (402, ErrorKind.QUOTA), (403, ErrorKind.AUTH),
     (404, ErrorKind.NOT_FOUND), (408, ErrorKind.TIMEOUT), (413, ErrorKind.BAD_REQUEST), (422, ErrorKind.BAD_REQUEST),
     (429, ErrorKind.RATE_LIMITED), (500, ErrorKind.SERVER), (502, ErrorKind.SERVER), (503, ErrorKind.SERVER),
     (418, ErrorKind.SERVER), (302, ErrorKind.SERVER)],
)  # fmt: skip
def test_kind_for_status(status, kind):
    assert kind_for_status(status) is kind


def test_every_requests_exception_class_is_mapped_explicitly():
    mapped = {cls for cls, _, _ in EXCEPTION_KINDS}
    classes = {
        obj for _, obj in inspect.getmembers(rex, inspect.isclass)
        if issubclass(obj, rex.RequestException) and obj.__module__.startswith("requests")
    }  # fmt: skip
    assert classes, "requests.exceptions has no exception classes?"
    assert classes - mapped == set(), "unmapped requests exceptions"


def test_table_is_ordered_most_specific_first():
    seen: list[type[BaseException]] = []
    for cls, _, _ in EXCEPTION_KINDS:
        for earlier in seen:
            assert not issubclass(cls, earlier), f"{cls.__name__} is shadowed by {earlier.__name__}"
        seen.append(cls)


def test_error_text_never_quotes_the_exception():
    secret_url = "http://127.0.0.1:1/v1/chat/completions?key=SECRET"
    exc = rex.ConnectionError(f"HTTPConnectionPool: Max retries exceeded with url: {secret_url}")
    error = classify_exception(exc, reading_body=False)
    assert error.kind is ErrorKind.CONNECT and "SECRET" not in error.message


@pytest.mark.parametrize(
    ("exc", "reading_body", "kind"),
    [
        (rex.ConnectTimeout(), False, ErrorKind.CONNECT),
        (rex.ReadTimeout(), False, ErrorKind.TIMEOUT),
        (rex.ConnectionError(), False, ErrorKind.CONNECT),
        # requests turns a read timeout during iter_content into ConnectionError(ReadTimeoutError)
        (
            rex.ConnectionError(urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out")),
            True,
            ErrorKind.TIMEOUT,
        ),
        (rex.ConnectionError(), True, ErrorKind.INTERRUPTED),
        (rex.ChunkedEncodingError(), True, ErrorKind.INTERRUPTED),
        (urllib3.exceptions.ProtocolError("Connection broken"), True, ErrorKind.INTERRUPTED),
        (urllib3.exceptions.ReadTimeoutError(None, "/", "x"), True, ErrorKind.TIMEOUT),
        (ConnectionResetError(), True, ErrorKind.INTERRUPTED),
        (rex.ContentDecodingError(), True, ErrorKind.MALFORMED_STREAM),
        (rex.InvalidURL(), False, ErrorKind.CONNECT),
    ],
)
def test_classify_exception(exc, reading_body, kind):
    assert classify_exception(exc, reading_body=reading_body).kind is kind


def test_keys_echoed_by_an_upstream_are_scrubbed():
    key = "sk-proj-abcdefghijklmnop"
    error = scrub(UpstreamError(ErrorKind.AUTH, f"Incorrect API key provided: {key}."), key)
    assert key not in error.message and key not in str(error) and mask_key(key) in error.message
    assert mask_key("short") == "****"


def test_requests_is_the_version_we_pinned():
    assert requests.__version__ == "2.34.2"
