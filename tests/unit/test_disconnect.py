"""peer_closed: what a client watch concludes from one non-blocking look at the socket."""

from __future__ import annotations

import socket

from app.disconnect import peer_closed


def test_peer_closed_tells_open_closed_pipelined_and_our_own_closed_socket_apart():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert peer_closed(ours) is False
        theirs.sendall(b"GET / HTTP/1.1\r\n")
        assert peer_closed(ours) is None  # more bytes: EOF can no longer be seen
    ours, theirs = socket.socketpair()
    with ours:
        theirs.close()
        assert peer_closed(ours) is True
    assert peer_closed(ours) is None  # closed by the server itself (fileno -1): nothing to watch
