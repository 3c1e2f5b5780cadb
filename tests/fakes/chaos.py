"""A fake OpenAI-compatible upstream that misbehaves on a schedule, for fault injection under load.

Every answer is derived from the request, so a client can check what it got: the last user
message is `rid=<id> n=<count>`, and a complete answer streams the pieces `<worker:id:0>`
... `<worker:id:count-1>` (OpenAI's wire format, `tests/fakes/openai_server.py`), then the
finish chunk and `data: [DONE]`. The name of the worker is in every piece, so the client
knows which upstream committed whatever the output format.

A `Schedule` is a list of `Phase`s on a shared monotonic clock. In each phase every fake has a
weighted mix of `Fault`s (drawn per request from a seeded generator) and its listener is up or
down. A fault that happens "at" content piece k writes k pieces first, so k = 0 is a failure
before the first token (the gateway fails over) and k > 0 one after it (the gateway must end
the stream with its explicit error marker). The `Conductor` thread opens and closes the
listeners when phases change: a closed listener refuses connections (on loopback the kernel
answers with a reset at once), and closing it also drops every open connection, as a server
that dies does.
"""

from __future__ import annotations

import enum
import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.http_server import Exchange, FakeHTTPServer, PeerClosed, kill_server
from tests.fakes.openai_server import SERVER_ERROR, SSE_HEADERS, FakeOpenAI, _chunk, rate_limit_body

PROMPT = re.compile(r"rid=(?P<rid>[A-Za-z0-9]+) n=(?P<n>[0-9]+)")


class Fault(enum.Enum):
    OK = "ok"  # the whole answer, paced
    ERROR_500 = "500"  # HTTP 500 before any output
    RATE_LIMITED = "429"  # HTTP 429 with Retry-After: 1
    HANG = "hang"  # accept, then say nothing until the gateway gives up
    CUT = "cut"  # close the connection after k pieces (no end of the chunked body)
    TRUNCATED = "truncated"  # end the HTTP body cleanly after k pieces, without finish or [DONE]
    MALFORMED = "malformed"  # an event that is not JSON after k pieces
    ERROR_EVENT = "error_event"  # an in-band `data: {"error": ...}` after k pieces
    TRICKLE = "trickle"  # after k pieces, a silence longer than the gateway's IDLE_TIMEOUT


#: Faults that happen at a content piece (the others are whole answers or errors before output).
AT_PIECE = frozenset({Fault.CUT, Fault.TRUNCATED, Fault.MALFORMED, Fault.ERROR_EVENT, Fault.TRICKLE})


def pieces(worker: str, rid: str, n: int) -> list[str]:
    """The content of a complete answer from `worker` to request `rid`."""
    return [f"<{worker}:{rid}:{i}>" for i in range(n)]


@dataclass(frozen=True)
class Phase:
    name: str
    start: float  # seconds since the schedule's origin
    end: float
    #: Per fake name: fault -> weight. A fake not named answers OK.
    mix: Mapping[str, Mapping[Fault, float]] = field(default_factory=dict)
    #: Fake names whose listener is closed during the phase.
    down: frozenset[str] = frozenset()
    #: Fake names whose listener flips every `flap` seconds (down first).
    flapping: frozenset[str] = frozenset()
    flap: float = 2.0

    def listening(self, name: str, t: float) -> bool:
        if name in self.down:
            return False
        if name in self.flapping:
            return int((t - self.start) / self.flap) % 2 == 1
        return True


class Schedule:
    """Phases on a shared clock; `origin` is set when the load starts (`begin()`)."""

    def __init__(self, phases: Sequence[Phase], seed: int = 0) -> None:
        self.phases = list(phases)
        self.origin: float | None = None
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    @property
    def end(self) -> float:
        return self.phases[-1].end

    def begin(self) -> None:
        self.origin = time.monotonic()

    def now(self) -> float:
        """Seconds since the origin (negative before it: the setup phase, everyone answers OK)."""
        return -1.0 if self.origin is None else time.monotonic() - self.origin

    def phase_at(self, t: float) -> Phase | None:
        for phase in self.phases:
            if phase.start <= t < phase.end:
                return phase
        return None

    def draw(self, name: str) -> Fault:
        phase = self.phase_at(self.now())
        mix = phase.mix.get(name) if phase is not None else None
        if not mix:
            return Fault.OK
        faults, weights = zip(*mix.items(), strict=True)
        with self._lock:
            return self._rng.choices(faults, weights)[0]

    def piece_for(self, n: int) -> int:
        """Where a fault at a piece happens: 0 (before the first token) about a third of the time."""
        with self._lock:
            return 0 if self._rng.random() < 0.33 else self._rng.randrange(1, max(n, 2))


class RefusableServer(FakeHTTPServer):
    """A FakeHTTPServer whose listener can be closed and opened again on the same port.

    The port is outside the kernel's ephemeral range, so while the listener is closed no
    outgoing connection (the gateway's, ours) can be given that port as its local end, and
    opening again never finds it taken."""

    def __init__(self, handler: Any) -> None:
        super().__init__(handler)
        self._server.server_close()  # the ephemeral port bound by the base class
        handler_class = self._server.RequestHandlerClass
        # socketserver listens with a backlog of 5: a burst of connections (hundreds of
        # streams failing over at once) would overflow it, and the kernel drops the SYNs.
        self._server_class = type("Server", (type(self._server),), {"request_queue_size": 1024})
        self._handler_class = handler_class
        self._server = self._bind_outside_ephemeral_range()
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._listening = False
        self._toggle = threading.Lock()

    def _bind_outside_ephemeral_range(self) -> Any:
        try:
            with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
                low = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            low = 32768
        rng = random.Random()
        for _ in range(200):
            port = rng.randrange(max(1024, low - 12000), low)
            try:
                return self._server_class(("127.0.0.1", port), self._handler_class)
            except OSError:
                continue
        raise RuntimeError("no free port below the ephemeral range")

    @property
    def listening(self) -> bool:
        return self._listening

    def start(self) -> RefusableServer:
        super().start()
        self._listening = True
        return self

    def close_listener(self) -> None:
        """Refuse new connections and drop the open ones (a dead server)."""
        with self._toggle:
            if not self._listening:
                return
            self._listening = False
            kill_server(self._server, self._live, self._thread)

    def open_listener(self) -> None:
        with self._toggle:
            if self._listening:
                return
            self._server = self._server_class(("127.0.0.1", self.port), self._handler_class)
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()
            self._listening = True

    def stop(self) -> None:
        self.open_listener()  # shutdown() waits for a serve_forever loop that must be running
        super().stop()


class ChaosOpenAI(FakeOpenAI):
    """A fake OpenAI-compatible worker named `name`, answering by `schedule`."""

    def __init__(self, name: str, schedule: Schedule, delay: float = 0.2, trickle: float = 4.0) -> None:
        super().__init__(chat=self._answer)
        self.name = name
        self.schedule = schedule
        self.delay = delay
        self.trickle = trickle
        #: Faults served, by kind (and whether they were at piece 0).
        self.served: Counter[str] = Counter()
        self.busy = 0
        #: The longest a paced write came late, in seconds, and when (schedule time).
        self.worst_lag = (0.0, 0.0)
        self._busy_lock = threading.Lock()
        self.server._server.server_close()  # the base class's server, replaced before it started
        self.server = RefusableServer(self._handle_counted)

    # --- accounting -----------------------------------------------------------------------

    def _handle_counted(self, ex: Exchange) -> None:
        with self._busy_lock:
            self.busy += 1
        try:
            self._handle(ex)
        finally:
            with self._busy_lock:
                self.busy -= 1

    def _count(self, fault: Fault, at: int | None = None) -> None:
        with self._lock:
            self.served[fault.value if at is None else f"{fault.value}@{'0' if at == 0 else 'k'}"] += 1

    # --- the answer -------------------------------------------------------------------------

    def _answer(self, ex: Exchange, fake: FakeOpenAI) -> None:
        body = ex.request.json()
        assert isinstance(body, dict)
        match = PROMPT.search(str(body["messages"][-1]["content"]))
        assert match is not None, body
        rid, n = match["rid"], int(match["n"])
        model = body.get("model", "fake-model")
        fault = self.schedule.draw(self.name)
        if fault is Fault.ERROR_500:
            self._count(fault)
            ex.respond(500, SERVER_ERROR)
            return
        if fault is Fault.RATE_LIMITED:
            self._count(fault)
            ex.respond(429, rate_limit_body(model), extra_headers=[("retry-after", "1")])
            return
        if fault is Fault.HANG:
            self._count(fault)
            ex.wait_for_close(30)
            ex.keep_alive = False
            return
        at = self.schedule.piece_for(n) if fault in AT_PIECE else n
        self._count(fault, at if fault in AT_PIECE else None)
        self._stream(ex, model, pieces(self.name, rid, n), fault, at)

    def _stream(self, ex: Exchange, model: str, texts: list[str], fault: Fault, at: int) -> None:
        ex.start(200, SSE_HEADERS)
        ex.chunk(_chunk(model, {"role": "assistant", "content": ""}, None, False))
        for index, text in enumerate(texts):
            if index == at:
                break
            if index:
                self._pause(ex, self.delay)
            ex.chunk(_chunk(model, {"content": text}, None, False))
        if fault is Fault.OK:
            ex.chunk(_chunk(model, {}, "stop", False))
            ex.chunk(b"data: [DONE]\n\n")
            ex.end_chunks()
        elif fault is Fault.CUT:
            ex.keep_alive = False  # the handler returns and the connection closes mid-body
        elif fault is Fault.TRUNCATED:
            ex.end_chunks()  # a well-framed HTTP body whose SSE stream never ended
            ex.keep_alive = False
        elif fault is Fault.MALFORMED:
            ex.chunk(b'data: {"id":"chatcmpl-fake123","choices":[{"delta":{"content":"unterminated\n\n')
            ex.end_chunks()
            ex.keep_alive = False
        elif fault is Fault.ERROR_EVENT:
            error = {"error": {"message": "The server had an error while processing your request.",
                               "type": "server_error", "param": None, "code": None}}  # fmt: skip
            ex.chunk(b"data: " + json.dumps(error).encode() + b"\n\n")
            ex.end_chunks()
            ex.keep_alive = False
        elif fault is Fault.TRICKLE:
            # The gateway's IDLE_TIMEOUT (FIRST_TOKEN_TIMEOUT at piece 0) is shorter, so it
            # hangs up; if it did not notice the silence (it was busy and found the next piece
            # already waiting), the answer goes on, whole and correct.
            self._pause(ex, self.trickle)
            for index, text in enumerate(texts[at:]):
                if index:
                    self._pause(ex, self.delay)
                ex.chunk(_chunk(model, {"content": text}, None, False))
            ex.chunk(_chunk(model, {}, "stop", False))
            ex.chunk(b"data: [DONE]\n\n")
            ex.end_chunks()

    def _pause(self, ex: Exchange, seconds: float) -> None:
        """Sleep, leaving early (PeerClosed) when the gateway hangs up meanwhile. Records how
        late this thread woke up: a fake that cannot keep its own pace would blame the gateway."""
        start = time.monotonic()
        if ex.wait_for_close(seconds):
            raise PeerClosed
        late = time.monotonic() - start - seconds
        if late > self.worst_lag[0]:
            self.worst_lag = (late, self.schedule.now())


class Conductor(threading.Thread):
    """Opens and closes the fakes' listeners as the schedule says, every 50 ms, until stopped."""

    def __init__(self, schedule: Schedule, fakes: Sequence[ChaosOpenAI]) -> None:
        super().__init__(daemon=True)
        self.schedule = schedule
        self.fakes = list(fakes)
        self.toggles: Counter[str] = Counter()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.05):
            t = self.schedule.now()
            phase = self.schedule.phase_at(t)
            for fake in self.fakes:
                want = True if phase is None else phase.listening(fake.name, t)
                if want != fake.server.listening:
                    (fake.server.open_listener if want else fake.server.close_listener)()
                    self.toggles[f"{fake.name} {'up' if want else 'down'}"] += 1

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)
        for fake in self.fakes:
            fake.server.open_listener()
