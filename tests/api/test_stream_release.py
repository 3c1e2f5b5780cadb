"""A streamed body the server closes before reading it (the client left between the headers and
the first read: gunicorn then only calls `close()`) must still release its dispatch. The
generator never started, so its `finally` never ran, and only the close callbacks can give
the worker's slot back and close the upstream."""

from __future__ import annotations

import gevent
import pytest
from werkzeug.test import EnvironBuilder

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 50, "stream_format": "sse"}


@pytest.mark.parametrize("keepalive", ["15", "0.001"])
def test_a_body_closed_unread_releases_its_worker(make_client, keepalive):
    # 15 s: the dispatch commits before the view returns, the body is the relay itself;
    # 1 ms: the view stops waiting at once, the body is the keep-alive relay around a
    # dispatch still pending (which must be cancelled, not left to commit to nobody).
    app = make_client(env={"SSE_KEEPALIVE_INTERVAL": keepalive, "DEMO_DELAY_MS": "5"}).application
    demo = app.extensions["cortex"].pool.get("demo")
    environ = EnvironBuilder(method="POST", path="/api/chat", json=CHAT).get_environ()
    statuses: list[str] = []
    body = app(environ, lambda status, headers, exc_info=None: statuses.append(status))
    assert statuses == ["200 OK"]
    body.close()  # never iterated
    gevent.sleep(0.05)  # a pending dispatch left running would commit by now
    assert demo.in_flight == 0
