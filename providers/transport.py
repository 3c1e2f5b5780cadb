"""The one place where HTTP happens and where `requests`' exceptions become `UpstreamError`s.

    requests.RequestException
    ├── ConnectionError ─┬─ ConnectTimeout (also a Timeout)   -> CONNECT
    │                    ├─ ProxyError, SSLError               -> CONNECT
    │                    └─ (itself)  before the response      -> CONNECT
    │                                 while reading the body   -> TIMEOUT if it wraps urllib3's
    │                                                             ReadTimeoutError, else INTERRUPTED
    ├── Timeout ── ReadTimeout                                 -> TIMEOUT
    ├── ChunkedEncodingError                                   -> INTERRUPTED
    ├── ContentDecodingError                                   -> MALFORMED_STREAM
    ├── TooManyRedirects, RetryError                           -> SERVER
    └── URLRequired, MissingSchema, InvalidSchema, InvalidURL,
        InvalidHeader, InvalidProxyURL, InvalidJSONError, ...  -> CONNECT (misconfigured worker)

`tests/unit/test_transport.py` fails if requests grows an exception class this table lacks.

Two sharp edges of requests handled here: `iter_content(chunk_size=None)` only yields data as
it arrives for chunked bodies (for a close-delimited body it reads to EOF first), so other
bodies are read with urllib3's `read1`; and we never use `iter_lines`, which yields a
spurious empty line when a CRLF straddles two reads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import requests
import urllib3.exceptions
from requests import exceptions as rex
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import check_header_validity, get_encoding_from_headers

from providers.base import PreparedCall
from providers.errors import ErrorKind, UpstreamError

USER_AGENT = "cortex-gateway/0.1"

#: Most specific first; every class of requests.exceptions that can be raised appears here.
EXCEPTION_KINDS: tuple[tuple[type[BaseException], ErrorKind, str], ...] = (
    (rex.ConnectTimeout, ErrorKind.CONNECT, "timed out connecting to the upstream"),
    (rex.ReadTimeout, ErrorKind.TIMEOUT, "the upstream did not answer in time"),
    (rex.Timeout, ErrorKind.TIMEOUT, "the upstream did not answer in time"),
    (rex.SSLError, ErrorKind.CONNECT, "TLS handshake with the upstream failed"),
    (rex.ProxyError, ErrorKind.CONNECT, "could not connect through the proxy"),
    (rex.ConnectionError, ErrorKind.CONNECT, "could not connect to the upstream"),
    (rex.ChunkedEncodingError, ErrorKind.INTERRUPTED, "the upstream connection broke mid-response"),
    (rex.ContentDecodingError, ErrorKind.MALFORMED_STREAM, "the upstream body could not be decoded"),
    (rex.TooManyRedirects, ErrorKind.SERVER, "the upstream redirected too many times"),
    (rex.RetryError, ErrorKind.SERVER, "the upstream request failed"),
    (rex.InvalidProxyURL, ErrorKind.CONNECT, "the configured proxy URL is invalid"),
    (rex.MissingSchema, ErrorKind.CONNECT, "the worker's URL has no scheme"),
    (rex.InvalidSchema, ErrorKind.CONNECT, "the worker's URL scheme is not supported"),
    (rex.InvalidURL, ErrorKind.CONNECT, "the worker's URL is invalid"),
    (rex.URLRequired, ErrorKind.CONNECT, "the worker has no URL"),
    (rex.InvalidHeader, ErrorKind.CONNECT, "a request header is invalid (check the worker's key)"),
    (rex.JSONDecodeError, ErrorKind.MALFORMED_STREAM, "the upstream sent invalid JSON"),
    (rex.InvalidJSONError, ErrorKind.SERVER, "could not encode the request body"),
    (rex.HTTPError, ErrorKind.SERVER, "the upstream answered with an HTTP error"),
    (rex.StreamConsumedError, ErrorKind.SERVER, "the upstream body was already read"),
    (rex.UnrewindableBodyError, ErrorKind.SERVER, "the request body could not be resent"),
    (rex.RequestException, ErrorKind.CONNECT, "the upstream request failed"),
)


def classify_exception(exc: BaseException, *, reading_body: bool) -> UpstreamError:
    """Map a transport exception to an UpstreamError, without ever quoting it (it holds the URL)."""
    if reading_body:
        if isinstance(exc, (urllib3.exceptions.ReadTimeoutError, rex.ReadTimeout)) or (
            isinstance(exc, rex.ConnectionError)
            and exc.args
            and isinstance(exc.args[0], urllib3.exceptions.ReadTimeoutError)
        ):
            return UpstreamError(ErrorKind.TIMEOUT, "the upstream went silent mid-stream")
        if type(exc) is rex.ConnectionError:
            return UpstreamError(ErrorKind.INTERRUPTED, "the upstream connection broke mid-response")
        # requests' own exceptions are OSErrors too, so raw errors are told apart first.
        if not isinstance(exc, rex.RequestException):
            if isinstance(exc, urllib3.exceptions.DecodeError):
                return UpstreamError(ErrorKind.MALFORMED_STREAM, "the upstream body could not be decoded")
            if isinstance(exc, (urllib3.exceptions.ProtocolError, OSError)):
                return UpstreamError(ErrorKind.INTERRUPTED, "the upstream connection broke mid-response")
    for cls, kind, message in EXCEPTION_KINDS:
        if isinstance(exc, cls):
            return UpstreamError(kind, message)
    if isinstance(exc, urllib3.exceptions.HTTPError):
        return UpstreamError(ErrorKind.INTERRUPTED, "the upstream connection failed")
    return UpstreamError(ErrorKind.CONNECT, f"the upstream request failed ({type(exc).__name__})")


class LeanAdapter(HTTPAdapter):
    """requests' adapter without the cookie jar on each response: a relay stores no upstream
    cookie (the session's policy refuses them all), so parsing Set-Cookie into a jar per
    response was work for nothing."""

    def build_response(self, req: requests.PreparedRequest, resp: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = resp.status
        response.headers = CaseInsensitiveDict(resp.headers)
        response.encoding = get_encoding_from_headers(response.headers)
        response.raw = resp
        response.reason = resp.reason
        response.url = req.url  # type: ignore[assignment]
        response.request = req
        response.connection = self
        return response


#: Prepared URLs kept (a worker has a handful: chat and models, per model for Gemini).
URL_CACHE_SIZE = 256


def uses_proxy(environ: Mapping[str, str]) -> bool:
    return any(key.lower() in ("http_proxy", "https_proxy", "all_proxy") and value for key, value in environ.items())


class Transport:
    """Owns the process's one `requests.Session` (rule 12): pooled keep-alive connections,
    no automatic retries (the dispatcher alone retries), sized for our concurrency.

    The session is created on first use, after gevent has patched the worker process.
    """

    def __init__(self, pool_size: int = 1000, environ: Mapping[str, str] | None = None) -> None:
        self._pool_size = pool_size
        self._environ = os.environ if environ is None else environ
        self._session: requests.Session | None = None
        self._adapter: HTTPAdapter | None = None
        self._urls: dict[str, str] = {}

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            session = requests.Session()
            adapter = LeanAdapter(pool_connections=64, pool_maxsize=self._pool_size, max_retries=0, pool_block=False)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers["User-Agent"] = USER_AGENT
            # A relay keeps no state between requests: cookies an upstream sets (load
            # balancer or bot-protection cookies) are not stored and never sent back.
            session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
            # requests re-reads the environment for proxies on every request when trust_env is
            # on (about a third of its per-request CPU here). Without proxy variables we read
            # the one other thing it would take from there, the CA bundle, once; with them,
            # requests keeps doing it, so HTTP(S)_PROXY and NO_PROXY work as usual.
            session.trust_env = uses_proxy(self._environ)
            if not session.trust_env:
                bundle = self._environ.get("REQUESTS_CA_BUNDLE") or self._environ.get("CURL_CA_BUNDLE")
                if bundle:
                    session.verify = bundle
            self._session = session
            self._adapter = adapter
        return self._session

    def send(
        self, call: PreparedCall, *, connect_timeout: float, read_timeout: float, stream: bool
    ) -> requests.Response:
        session = self.session
        try:
            if session.trust_env:  # proxies from the environment: requests' full path reads them
                return session.request(
                    call.method,
                    call.url,
                    headers=call.headers,
                    data=call.body,
                    timeout=(connect_timeout, read_timeout),
                    stream=stream,
                    allow_redirects=False,
                )
            # What Session.request does for us, less the work that cannot apply: merging
            # environment settings, cookies, hooks and redirects, and re-parsing the same
            # worker URL on every request. About a third of requests' CPU per request.
            assert self._adapter is not None
            response = self._adapter.send(
                self._prepare(call, session),
                stream=stream,
                timeout=(connect_timeout, read_timeout),
                verify=True if session.verify is None else session.verify,
                cert=session.cert,
                proxies=session.proxies,
            )
            if not stream:
                response.content  # noqa: B018 - read the body now, as Session.send does
            return response
        except Exception as exc:  # noqa: BLE001 - every transport failure becomes one error type
            raise classify_exception(exc, reading_body=False) from exc

    def _prepare(self, call: PreparedCall, session: requests.Session) -> requests.PreparedRequest:
        prepared = requests.PreparedRequest()
        prepared.method = call.method.upper()
        url = self._urls.get(call.url)
        if url is None:
            prepared.prepare_url(call.url, None)
            if len(self._urls) >= URL_CACHE_SIZE:
                self._urls.clear()
            url = self._urls[call.url] = prepared.url  # type: ignore[assignment]
        prepared.url = url
        headers: CaseInsensitiveDict[str] = CaseInsensitiveDict(session.headers)  # type: ignore[arg-type]
        for header in call.headers.items():
            check_header_validity(header)  # a key with a newline must not split the request
            headers[header[0]] = header[1]
        prepared.headers = headers
        prepared.prepare_body(call.body, None)
        return prepared

    @staticmethod
    def iter_body(response: requests.Response) -> Iterator[bytes]:
        """Yield body bytes as they arrive, whatever the framing."""
        raw = response.raw
        try:
            if raw.chunked and raw.supports_chunked_reads():
                yield from response.iter_content(chunk_size=None)
                return
            while True:
                data = raw.read1(65536)
                if not data:
                    return
                yield data
        except Exception as exc:  # noqa: BLE001
            raise classify_exception(exc, reading_body=True) from exc

    @staticmethod
    def read_body(response: requests.Response, limit: int = 1 << 20) -> bytes:
        """Read a (small) non-streamed body such as an error or a model list, bounded in size."""
        parts: list[bytes] = []
        size = 0
        for data in Transport.iter_body(response):
            parts.append(data)
            size += len(data)
            if size >= limit:
                break
        return b"".join(parts)[:limit]

    def idle_connections(self) -> int:
        """Upstream connections kept alive in the pool, open and waiting for the next request
        (for the metrics, read at scrape time). Connections lent to a request are not there;
        a pool's slots are walked without taking a connection, and nothing is created."""
        session = self._session
        if session is None:
            return 0
        idle = 0
        adapters = {id(adapter): adapter for adapter in session.adapters.values()}  # one adapter, two prefixes
        for adapter in adapters.values():
            pools = getattr(getattr(adapter, "poolmanager", None), "pools", None)
            if pools is None:
                continue
            for key in pools.keys():
                slots = getattr(pools.get(key), "pool", None)  # None once the pool is closed
                if slots is not None:
                    idle += sum(1 for conn in list(slots.queue) if getattr(conn, "sock", None) is not None)
        return idle

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
