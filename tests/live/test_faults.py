"""Faults under load: a few hundred concurrent streams through the real server (gunicorn, two
gevent worker processes) while fake upstreams misbehave on a schedule (tests/fakes/chaos.py).

Three OpenAI-compatible workers, tried in priority order: `flaky` (two keys) and `shaky`
misbehave, `good` is the well-behaved one, up in most phases. The schedule (seconds from the
start of the load; FAULTS_SECONDS repeats it for a longer run by hand):

    calm      all answer normally
    chaos     flaky: 500, 429 (Retry-After), hangs past FIRST_TOKEN_TIMEOUT, cuts, clean ends without
              [DONE], malformed events, in-band errors, trickles past IDLE_TIMEOUT (before or after
              the first token); shaky's listener flaps (refused connections, dropped streams)
    outage    good's listener is closed, flaky answers 500 or breaks before its first token, shaky
              hangs or answers 500: nothing can answer (503 with Retry-After)
    limited   every worker answers 429 with Retry-After: 1 (429 with Retry-After)
    chaos 2   flaky mostly hangs, trickles and truncates; shaky rate limits and cuts
    calm 2    all answer normally again

Each client request asks for `n` pieces with a request id; every fake derives its answer from
them, so the client checks the exact content it got and who committed. Invariants:
1. every request ends with the complete, correct answer or an explicit error (an HTTP error
   with a JSON body, or the format's error marker), never silently truncated, never past its
   deadline (REQUEST_TIMEOUT + a margin);
2. a request that ran entirely inside a phase where `good` was up and well-behaved never
   gets an error before its first byte; only streams of a misbehaving worker that had already
   committed may fail (mid-stream, with the marker);
3. afterwards no upstream exchange is still open at any fake, every upstream socket of each
   worker process is an idle pooled connection, the process's other file descriptors and
   event-loop watchers are back to their baseline, in-flight counts are 0;
4. cortex_requests_total by outcome equals what the clients saw.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import http.client
import itertools
import json
import os
import random
import re
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.chaos import ChaosOpenAI, Conductor, Fault, Phase, Schedule, pieces
from tests.fakes.http_server import eventually
from tests.live.helpers import toml_worker

T = TypeVar("T")

pytestmark = pytest.mark.live

CONCURRENCY = int(os.environ.get("FAULTS_CONCURRENCY", "250"))
LOAD_SECONDS = float(os.environ.get("FAULTS_SECONDS", "50"))
ADMIN_TOKEN = "faults-admin-token"
ENV = {
    "CONNECT_TIMEOUT": "1",
    "FIRST_TOKEN_TIMEOUT": "1.5",
    "IDLE_TIMEOUT": "2",
    "REQUEST_TIMEOUT": "15",
    "SSE_KEEPALIVE_INTERVAL": "0.5",
    "CIRCUIT_FAILURES": "5",
    "CIRCUIT_COOLDOWN": "2",
    "RETRY_BACKOFF_BASE": "0.1",
    "RETRY_BACKOFF_MAX": "0.5",
    "CORTEX_ADMIN_TOKEN": ADMIN_TOKEN,
    "LOG_LEVEL": "warning",
}
CLIENT_DEADLINE = 15 + 5.0  # REQUEST_TIMEOUT + margin
#: A phase's first seconds still carry the previous one's consequences: keys cooling for a
#: Retry-After of 1 s. Invariant 2 judges requests that started after this.
SETTLE = 1.5
GOOD_PHASES = ("calm", "chaos", "chaos 2", "calm 2")

CHAOS = {Fault.OK: 3, Fault.ERROR_500: 1, Fault.RATE_LIMITED: 1, Fault.HANG: 1, Fault.CUT: 1, Fault.TRUNCATED: 1,
         Fault.MALFORMED: 1, Fault.ERROR_EVENT: 1, Fault.TRICKLE: 1}  # fmt: skip


def cycle(origin: float) -> list[Phase]:
    """One 50-second cycle of the schedule, starting at `origin`."""
    spans = [
        ("calm", 5, {}, frozenset(), frozenset()),
        ("chaos", 12, {"flaky": CHAOS, "shaky": {Fault.OK: 2, Fault.HANG: 1, Fault.TRICKLE: 1}},
         frozenset(), frozenset({"shaky"})),
        ("outage", 7, {"flaky": {Fault.ERROR_500: 3, Fault.CUT: 1, Fault.MALFORMED: 1},
                       "shaky": {Fault.HANG: 1, Fault.ERROR_500: 1}}, frozenset({"good"}), frozenset()),
        ("limited", 5, {name: {Fault.RATE_LIMITED: 1} for name in ("flaky", "shaky", "good")},
         frozenset(), frozenset()),
        ("chaos 2", 13, {"flaky": {Fault.OK: 1, Fault.HANG: 2, Fault.TRICKLE: 2, Fault.TRUNCATED: 2},
                         "shaky": {Fault.OK: 2, Fault.RATE_LIMITED: 1, Fault.CUT: 2}}, frozenset(), frozenset()),
        ("calm 2", 8, {}, frozenset(), frozenset()),
    ]  # fmt: skip
    phases, start = [], origin
    for name, length, mix, down, flapping in spans:
        phases.append(Phase(name, start, start + length, mix, down, flapping))
        start += length
    return phases


def schedule(seconds: float) -> Schedule:
    phases: list[Phase] = []
    for number in range(max(1, round(seconds / 50))):
        phases += cycle(number * 50.0)
    return Schedule(phases, seed=int(os.environ.get("FAULTS_SEED", "10")))


# --- the client ---------------------------------------------------------------------------


@dataclass
class Result:
    rid: str
    fmt: str
    n: int
    started: float  # schedule time
    ended: float = 0.0
    status: int | None = None
    outcome: str = "?"  # completed, failed_mid_stream, no_workers, rate_limited, or a violation
    worker: str | None = None  # who committed (from the content)
    kind: str | None = None  # the error's kind or code
    retry_after: float | None = None
    detail: str = ""


#: Client outcomes that are explicit, correct endings (invariant 1).
EXPLICIT = frozenset({"completed", "failed_mid_stream", "no_workers", "rate_limited"})
REFUSAL_OUTCOME = {"no_workers_available": "no_workers", "rate_limited": "rate_limited"}
FIRST_PIECE = re.compile(r"<(\w+):(\w+):0>")


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> tuple[bytes, bool]:
    """The body, and whether its framing ended properly (the terminal chunk, or the length)."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            line = await reader.readline()
            if not line.endswith(b"\r\n"):
                return b"".join(parts), False
            size = int(line.split(b";")[0], 16)
            if size == 0:
                await reader.readline()
                return b"".join(parts), True
            try:
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            except asyncio.IncompleteReadError as error:
                parts.append(error.partial)
                return b"".join(parts), False
    if "content-length" in headers:
        try:
            return await reader.readexactly(int(headers["content-length"])), True
        except asyncio.IncompleteReadError as error:
            return error.partial, False
    return await reader.read(), True


async def request(port: int, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes, bool]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        payload = json.dumps(body).encode()
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
            + payload
        )
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        data, framed = await _read_body(reader, headers)
        return status, headers, data, framed
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


def sse_events(data: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) of each event; comments (keep-alives) dropped."""
    events = []
    for block in data.decode().split("\n\n"):
        name, lines = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                lines.append(line[6:])
        if lines:
            events.append((name, "\n".join(lines)))
    return events


def judge_content(result: Result, text: str, ended_well: bool) -> None:
    """The content of a 200: complete and correct, or a correct prefix before an error marker."""
    match = FIRST_PIECE.match(text)
    if text and (match is None or match[2] != result.rid):
        result.outcome, result.detail = "corrupt", text[:200]
        return
    result.worker = match[1] if match else None
    expected = "".join(pieces(result.worker, result.rid, result.n)) if result.worker else ""
    if ended_well:
        if text == expected:
            result.outcome = "completed"
        else:
            result.outcome, result.detail = "wrong_content", text[-200:]
    elif not expected.startswith(text):
        result.outcome, result.detail = "corrupt", text[-200:]


def judge(result: Result, status: int, headers: dict[str, str], data: bytes, framed: bool) -> None:
    result.status = status
    if status != 200:
        try:
            doc = json.loads(data)
        except ValueError:
            result.outcome, result.detail = f"http_{status}_not_json", data[:200].decode(errors="replace")
            return
        retry = headers.get("retry-after")
        result.retry_after = float(retry) if retry else None
        if status in (429, 503) and "error" in doc and retry is not None:
            result.outcome = "rate_limited" if status == 429 else "no_workers"
            error = doc["error"]
            result.kind = error.get("code") if isinstance(error, dict) else error
            result.detail = data[:600].decode(errors="replace")
        else:
            result.outcome, result.detail = f"http_{status}", data[:300].decode(errors="replace")
        return
    if not framed:
        result.outcome, result.detail = "cut_by_transport", data[-200:].decode(errors="replace")
        return
    if result.fmt == "text":
        text = data.decode()
        marker = text.find("\n[cortex-error] ")
        if marker < 0:
            judge_content(result, text, True)
            if result.outcome == "wrong_content" and result.worker and expected_text(result).startswith(text):
                result.outcome = "silent_truncation"
            return
        result.kind = text[marker + 16 :].split(":", 1)[0]
        text = text[:marker]
        result.outcome = "failed_mid_stream" if text else "error_before_content"
        if text:
            text_ok(result, text)
        return
    events = sse_events(data)
    texts: list[str] = []
    end: tuple[str, Any] | None = None
    for name, payload in events:
        if end is not None:
            result.outcome, result.detail = "data_after_end", payload[:200]
            return
        if result.fmt == "sse":
            doc = json.loads(payload)
            if name is None:
                texts.append(doc["text"])
            elif name in ("done", "error"):
                end = (name, doc)
        else:
            if payload == "[DONE]":
                end = ("done", None)
                continue
            doc = json.loads(payload)
            if "error" in doc:
                end = ("error", doc["error"])
            else:
                for choice in doc["choices"]:
                    texts.append(choice["delta"].get("content") or "")
    text = "".join(texts)
    if end is None:
        judge_content(result, text, False)
        if result.outcome != "corrupt":
            result.outcome = "silent_truncation"
        return
    if end[0] == "done":
        judge_content(result, text, True)
        if result.outcome == "wrong_content" and result.worker and expected_text(result).startswith(text):
            result.outcome = "silent_truncation"
        return
    code = end[1].get("error") if result.fmt == "sse" else end[1].get("code")
    result.kind = code
    if text:
        result.outcome = "failed_mid_stream"
        text_ok(result, text)
    else:
        result.outcome = REFUSAL_OUTCOME.get(code, f"refused_{code}")
        result.detail = str(end[1].get("message"))[:600]
        if result.fmt == "sse":
            result.retry_after = end[1].get("retry_after")


def expected_text(result: Result) -> str:
    return "".join(pieces(result.worker or "", result.rid, result.n))


def text_ok(result: Result, text: str) -> bool:
    """A failed stream's content must be a correct prefix of one worker's answer."""
    match = FIRST_PIECE.match(text)
    if match is None or match[2] != result.rid:
        result.outcome, result.detail = "corrupt", text[:200]
        return False
    result.worker = match[1]
    if not "".join(pieces(result.worker, result.rid, result.n)).startswith(text):
        result.outcome, result.detail = "corrupt", text[-200:]
        return False
    return True


ROUTES = {
    "text": ("/api/chat", {"stream_format": "text"}),
    "sse": ("/api/chat", {"stream_format": "sse"}),
    "v1": ("/v1/chat/completions", {"stream": True}),
}


async def client(number: int, port: int, plan: Schedule, until: float, results: list[Result]) -> None:
    rng = random.Random(number)
    formats = itertools.cycle(["text", "sse", "v1"][number % 3 :] + ["text", "sse", "v1"][: number % 3])
    for seq in itertools.count():
        if plan.now() >= until:
            return
        fmt, n = next(formats), rng.randint(6, 24)
        result = Result(f"c{number}r{seq}", fmt, n, plan.now())
        results.append(result)
        path, extra = ROUTES[fmt]
        body = {"model": "fake-model", "messages": [{"role": "user", "content": f"rid={result.rid} n={n}"}], **extra}
        try:
            status, headers, data, framed = await asyncio.wait_for(request(port, path, body), CLIENT_DEADLINE)
        except TimeoutError:
            result.outcome = "hung"
        except (OSError, asyncio.IncompleteReadError) as error:
            result.outcome, result.detail = "connection_error", repr(error)
        else:
            try:
                judge(result, status, headers, data, framed)
            except (ValueError, KeyError, TypeError) as error:
                result.outcome, result.detail = "unparsable", f"{error!r}: {data[:300]!r}"
        result.ended = plan.now()
        if result.outcome in ("no_workers", "rate_limited"):
            # A polite client honours Retry-After (bounded, to keep the test moving).
            await asyncio.sleep(min(result.retry_after or 1.0, 3.0))


async def run_load(port: int, plan: Schedule, concurrency: int) -> list[Result]:
    results: list[Result] = []
    plan.begin()
    await asyncio.gather(*(client(i, port, plan, plan.end, results) for i in range(concurrency)))
    return results


# --- measuring the worker processes ---------------------------------------------------------


@dataclass
class ProcessState:
    pid: int
    fds: int
    upstream_sockets: int
    pooled_idle: int
    loop_watchers: int
    in_flight: int

    @property
    def other_fds(self) -> int:
        return self.fds - self.upstream_sockets


def _tcp_remote_ports() -> dict[int, int]:
    """socket inode -> remote port, for every IPv4 TCP socket."""
    ports = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        ports[int(cols[9])] = int(cols[2].split(":")[1], 16)
    return ports


def _process_fds(pid: int, upstream_ports: set[int]) -> tuple[int, int]:
    remote = _tcp_remote_ports()
    fds = upstream = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        fds += 1
        if target.startswith("socket:[") and remote.get(int(target[8:-1])) in upstream_ports:
            upstream += 1
    return fds, upstream


def _gauge(metrics: str, name: str, pid: int) -> int:
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("pid") == str(pid):
                return int(sample.value)
    raise AssertionError(f"{name} has no value for pid {pid}")


def probe(port: int, workers: int, upstream_ports: set[int]) -> dict[int, ProcessState]:
    """Each worker process's state, as it reports it (over a connection it accepted, so the
    scrape is answered by that very process) and as /proc shows it."""
    states: dict[int, ProcessState] = {}
    connections: list[http.client.HTTPConnection] = []
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        for _ in range(60):
            if len(states) == workers:
                break
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connections.append(conn)
            conn.request("GET", "/api/admin/workers", headers=auth)
            answer = json.loads(conn.getresponse().read())
            pid = answer["pid"]
            if pid in states:
                continue
            conn.request("GET", "/metrics")
            metrics = conn.getresponse().read().decode()
            fds, upstream = _process_fds(pid, upstream_ports)
            states[pid] = ProcessState(
                pid, fds, upstream, _gauge(metrics, "cortex_upstream_connections_idle", pid),
                _gauge(metrics, "cortex_event_loop_watchers", pid), sum(w["in_flight"] for w in answer["workers"]),
            )  # fmt: skip
    finally:
        for conn in connections:
            conn.close()
    assert len(states) == workers, f"reached only the worker processes {sorted(states)}"
    return states


def cpu_seconds(processes: dict[int, ProcessState]) -> dict[str, float]:
    """CPU time used so far by each worker process and by this one (fakes and clients)."""
    ticks = os.sysconf("SC_CLK_TCK")
    spent = {}
    for pid in processes:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        spent[f"worker {pid}"] = (int(fields[11]) + int(fields[12])) / ticks
    usage = os.times()
    spent["test process"] = usage.user + usage.system
    return spent


def scrape(url: str) -> dict[str, float]:
    """cortex_requests_total by outcome, and cortex_streams_in_flight."""
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    totals: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "cortex_requests_total":
                totals[sample.labels["outcome"]] += sample.value
            elif sample.name == "cortex_streams_in_flight":
                totals["(in flight)"] += sample.value
    return dict(totals)


# --- the test ---------------------------------------------------------------------------------


def run_in_own_loop(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run in a thread of its own: the browser tests' session-scoped Playwright (sync
    API) keeps an event loop marked running in the main thread for the rest of the session."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def test_streams_under_scheduled_upstream_faults_end_explicitly_and_leave_nothing_behind(gateway):
    plan = schedule(LOAD_SECONDS)
    fakes = [ChaosOpenAI(name, plan).start() for name in ("flaky", "shaky", "good")]
    conductor = Conductor(plan, fakes)
    try:
        toml = "".join(
            toml_worker(name=f.name, base_url=f.base_url, models=["fake-model"], priority=i + 1,
                        api_keys=["sk-f1", "sk-f2"] if f.name == "flaky" else [f"sk-{f.name}"])
            for i, f in enumerate(fakes)
        )  # fmt: skip
        gw = gateway(toml, env=ENV, workers=2)
        ports = {f.server.port for f in fakes}
        warm = run_in_own_loop(run_warmup(gw.port, plan))
        assert all(r.outcome == "completed" for r in warm), [vars(r) for r in warm if r.outcome != "completed"]
        plan.origin = None
        before_metrics = scrape(gw.url)
        baseline = probe(gw.port, 2, ports)

        conductor.start()
        started, cpu_before = time.monotonic(), cpu_seconds(baseline)
        # A full collection of this process's heap (every fake's request records, the
        # clients' results) stalls the fakes' threads for up to a second, longer than the
        # gateway's IDLE_TIMEOUT: then the test, not the gateway, would cut streams.
        gc.freeze()
        gc.disable()
        try:
            results = run_in_own_loop(run_load(gw.port, plan, CONCURRENCY))
        finally:
            gc.enable()
            gc.unfreeze()
        duration = time.monotonic() - started
        cpu = {who: spent - cpu_before[who] for who, spent in cpu_seconds(baseline).items()}
        conductor.stop()

        for fake in fakes:
            assert eventually(lambda fake=fake: fake.busy == 0, timeout=10), f"{fake.name}: {fake.busy} exchanges open"
        assert eventually(lambda: scrape(gw.url).get("(in flight)", 0) == 0, timeout=10), scrape(gw.url)
        tally = Counter(r.outcome for r in results)
        expected = {o: before_metrics.get(o, 0) + tally.get(o, 0) for o in EXPLICIT}
        # the last relays may finish their accounting just after their client read the end
        eventually(lambda: all(scrape(gw.url).get(o, 0) == expected[o] for o in EXPLICIT), timeout=10)
        after_metrics = scrape(gw.url)
        after = probe(gw.port, 2, ports)
    finally:
        if conductor.is_alive():
            conductor.stop()
        for fake in fakes:
            fake.stop()

    report(results, duration, cpu, plan, fakes, conductor, baseline, after, before_metrics, after_metrics)

    # 1. explicit endings only, no hangs
    bad = [r for r in results if r.outcome not in EXPLICIT]
    assert not bad, "requests that did not end explicitly:\n" + "\n".join(str(vars(r)) for r in bad[:20])
    # 2. no error before the first byte while good was up and behaving for the whole request
    judged, violations = 0, []
    for r in results:
        phase = plan.phase_at(r.started)
        if phase is None or phase.name not in GOOD_PHASES:
            continue
        if r.started < phase.start + SETTLE or r.ended > phase.end:
            continue
        judged += 1
        if r.outcome == "completed" or (r.outcome == "failed_mid_stream" and r.worker != "good"):
            continue
        violations.append(r)
    assert judged > len(results) // 5, judged
    assert not violations, "failed while good was up:\n" + "\n".join(str(vars(r)) for r in violations[:20])
    # every kind of ending happened
    assert all(tally[o] > 0 for o in EXPLICIT), tally
    # 3. nothing left behind
    for pid, state in after.items():
        assert state.in_flight == 0, state
        assert state.upstream_sockets == state.pooled_idle, f"upstream sockets outside the pool: {state}"
        assert state.other_fds == baseline[pid].other_fds, (baseline[pid], state)
        assert state.loop_watchers <= baseline[pid].loop_watchers, (baseline[pid], state)
    # 4. the metrics agree with the clients
    for outcome in set(after_metrics) | set(before_metrics):
        if outcome == "(in flight)":
            continue
        seen = tally.get(outcome, 0)
        assert after_metrics.get(outcome, 0) - before_metrics.get(outcome, 0) == seen, (
            outcome, before_metrics, after_metrics, tally)  # fmt: skip


async def run_warmup(port: int, plan: Schedule) -> list[Result]:
    """A few requests of each format before the schedule starts: every lazy thing (the
    upstream pools, the metrics files) exists before the baseline is taken."""
    results: list[Result] = []
    for number in range(6):
        result = Result(f"w{number}", ["text", "sse", "v1"][number % 3], 3, -1.0)
        path, extra = ROUTES[result.fmt]
        body = {"model": "fake-model", "messages": [{"role": "user", "content": f"rid={result.rid} n=3"}], **extra}
        judge(result, *(await asyncio.wait_for(request(port, path, body), CLIENT_DEADLINE)))
        results.append(result)
    return results


def report(results, duration, cpu, plan, fakes, conductor, baseline, after, before_metrics, after_metrics) -> None:  # type: ignore[no-untyped-def]
    outcomes = sorted({r.outcome for r in results})
    phases = []
    for p in plan.phases:
        if p.name not in phases:
            phases.append(p.name)
    by_phase: dict[str, Counter[str]] = {name: Counter() for name in phases}
    for r in results:
        phase = plan.phase_at(r.started)
        by_phase[phase.name if phase else "after"][r.outcome] += 1
    lines = [
        f"\n{len(results)} streams, {CONCURRENCY} concurrent clients, {duration:.1f} s of load (schedule {plan.end:.0f} s)"
    ]
    width = max(len(o) for o in outcomes) + 2
    lines.append("phase".ljust(10) + "".join(o.rjust(width) for o in outcomes) + "total".rjust(8))
    for name in phases:
        row = by_phase[name]
        lines.append(
            name.ljust(10) + "".join(str(row[o]).rjust(width) for o in outcomes) + str(sum(row.values())).rjust(8)
        )
    total = Counter(r.outcome for r in results)
    lines.append("all".ljust(10) + "".join(str(total[o]).rjust(width) for o in outcomes) + str(len(results)).rjust(8))
    lines.append(
        "by format: " + ", ".join(f"{f} {c}" for f, c in sorted(Counter((r.fmt, r.outcome) for r in results).items()))
    )  # noqa: E501
    lines.append("committed by: " + str(dict(Counter(r.worker for r in results if r.worker))))
    lines.append("mid-stream kinds: " + str(dict(Counter(r.kind for r in results if r.outcome == "failed_mid_stream"))))
    for fake in fakes:
        lines.append(f"{fake.name} served: {dict(sorted(fake.served.items()))}")
        lines.append(f"{fake.name} worst lag of a paced write: {fake.worst_lag[0]:.3f} s at t={fake.worst_lag[1]:.1f}")
    lines.append(f"listener toggles: {dict(conductor.toggles)}")
    lines.append("CPU seconds during the load: " + ", ".join(f"{who} {spent:.1f}" for who, spent in cpu.items()))
    for pid in sorted(after):
        lines.append(f"pid {pid}: baseline {baseline[pid]}\n{' ' * 10}after    {after[pid]}")
    lines.append(f"metrics before: {before_metrics}\nmetrics after:  {after_metrics}")
    print("\n".join(lines))
