#!/usr/bin/env python3
"""Cortex against the direct path, in one session: `make bench` (or run this file).

    .venv/bin/python bench/bench.py                          # every scenario, edges on (~5 min)
    .venv/bin/python bench/bench.py --scenarios s1,a --edges off
    .venv/bin/python bench/bench.py --target http://127.0.0.1:4000 --header 'Authorization: Bearer k' \\
        --upstream-port 9100                                 # a gateway already running, forwarding to :9100

Starts the mock upstream (bench/upstream.py) and Cortex exactly as an operator runs it
(`gunicorn -c gunicorn.conf.py wsgi:app` from the repository root, one gevent worker process,
every edge on unless `--edges off`), then for each scenario runs the load generator
(bench/loadgen.py) first straight at the upstream ("direct") and then through Cortex, and
reports both, the overhead (gateway - direct) and the ratio (gateway / direct). While each run's
window is measured, the gateway worker's utime+stime and RSS are read from /proc every 100 ms.

With two or more cores the gateway (master and worker) is pinned to CPU 0 and everything else
(this harness, upstream, load generator) to CPU 1 (`--no-pin`: the kernel decides).
Writes bench/results/<UTC time>.md and .json. Loopback only; every run is bounded in time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import re
import resource
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import procfs  # noqa: E402

BENCH_KEY = "sk-bench-client-0001"
NOFILE = 65536


@dataclass
class Scenario:
    name: str
    title: str
    stream: bool
    connections: int
    chunks: int = 20
    delay_ms: int = 0
    warmup: float = 2.0
    duration: float = 10.0
    ramp: float = 0.0
    once: bool = False
    timeout: float = 30.0
    #: (metric, comparison, value) checked on the gateway's row; see TARGET_CHECKS.
    targets: list[tuple[str, str, float]] = field(default_factory=list)


SCENARIOS = {
    "s1": Scenario(
        "s1",
        "(s1) streaming 20 chunks, 1 client: unloaded time to first byte",
        True,
        1,
        warmup=1,
        duration=8,
        targets=[("ttfb_p50_over_ms", "<=", 1.0)],
    ),
    "a": Scenario("a", "(a) non-streaming, 32 clients, closed loop", False, 32),
    "b": Scenario("b", "(b) streaming 20 chunks unpaced, 32 clients, closed loop", True, 32),
    "c1000": Scenario(
        "c1000",
        "(c1000) 1,000 clients, 20 chunks 50 ms apart (~1 s streams)",
        True,
        1000,
        delay_ms=50,
        warmup=3,
        duration=12,
        ramp=2,
        targets=[
            ("rps_ratio", ">=", 0.9),
            ("ttfb_p99_ms", "<", 250),
            ("intact_all_pct", ">=", 100),
            ("rss_peak_mib", "<", 150),
        ],
    ),  # fmt: skip
    "c10k": Scenario(
        "c10k",
        "(c10k) 10,000 streams held at once, one chunk per second (30 chunks)",
        True,
        10000,
        chunks=30,
        delay_ms=1000,
        warmup=0,
        duration=0,
        ramp=10,
        once=True,
        timeout=120,
        targets=[("intact_all_pct", ">=", 100), ("rss_peak_mib", "<", 1024)],
    ),
}
DEFAULT_SCENARIOS = "s1,a,b,c1000,c10k"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes


def raise_nofile() -> None:
    """Open-file limit for this process and everything it starts (children inherit it). 10,000
    streams need ~20,000 descriptors in the gateway worker (client + upstream socket each); as
    root the hard limit can be raised up to fs.nr_open, else only the soft one to the hard."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, NOFILE), max(hard, NOFILE)))
    except (ValueError, OSError):  # not root, or root without CAP_SYS_RESOURCE (a container)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log(f"warning: the open-file hard limit stays at {hard}: raising it needs CAP_SYS_RESOURCE")


def fit_streams(sc: Scenario) -> str | None:
    """Scale a held-streams scenario down to what the open-file limit allows: the gateway worker
    holds two sockets per stream (client and upstream) plus ~100 of its own."""
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    fits = (limit - 200) // 2
    if sc.once and sc.connections > fits:
        note = (
            f"{sc.name}: {fits:,} streams instead of {sc.connections:,}: the open-file limit is {limit:,} "
            f"and a stream holds two descriptors in the gateway worker"
        )
        sc.connections = fits
        return note
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_listening(port: int, proc: subprocess.Popen[bytes] | None, what: str, path: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{what} exited with status {proc.returncode} before it listened")
        try:
            if http_get(port, path, 1.0)[0] in (200, 503):
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} did not answer on 127.0.0.1:{port}{path} within {timeout:g} s")


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 15) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def pinned(cpus: set[int] | None):  # type: ignore[no-untyped-def]
    """preexec_fn that pins the child (and whatever it forks) to `cpus`."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def gateway_env(args: argparse.Namespace, port: int, upstream_port: int, log_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEYS", "_URLS", "_API_KEY"))}
    env.pop("CORTEX_CONFIG", None)
    env.update({
        "WEB_CONCURRENCY": "1",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DEMO_PROVIDER": "off",
        "OPENAI_COMPAT_URLS": f"http://127.0.0.1:{upstream_port}/v1",
        "OPENAI_COMPAT_MODEL": "bench-model",
        # Sized for the largest scenario (c10k), as an operator serving 10,000 streams would.
        "WORKER_CONNECTIONS": "12000",
        "UPSTREAM_POOL_SIZE": "12000",
        "BACKLOG": "4096",
        "CORTEX_STATE_DIR": str(log_dir / "state"),
    })  # fmt: skip
    if args.edges == "on":
        env.update({
            "CORTEX_API_KEYS": BENCH_KEY,
            "RATE_LIMIT": "10000000/minute",
            "CORS_ORIGINS": "http://localhost",
            "LOG_FORMAT": "json",
        })  # fmt: skip
    return env


class Gateway:
    """Cortex under gunicorn, started here (or one already running, found from its port)."""

    def __init__(self, args: argparse.Namespace, upstream_port: int, cpus: set[int] | None, log_dir: Path) -> None:
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = log_dir / "gateway.log"
        self.master = 0
        self.workers: list[int] = []
        self.command = ""
        if args.target:
            m = re.match(r"http://(127\.0\.0\.1|localhost):(\d+)", args.target)
            if not m:
                raise SystemExit(f"--target must be http://127.0.0.1:PORT[/...], got {args.target}")
            self.port = int(m.group(2))
            self.command = f"(already running at {args.target})"
            return
        self.port = free_port()
        env = gateway_env(args, self.port, upstream_port, log_dir)
        cmd = shlex.split(args.gateway_cmd) if args.gateway_cmd else [
            str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"]  # fmt: skip
        self.command = " ".join(shlex.quote(c) for c in cmd)
        self.env_shown = {k: ("<bench key>" if k == "CORTEX_API_KEYS" else v) for k, v in env.items()
                          if k not in os.environ or os.environ[k] != v}  # fmt: skip
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     preexec_fn=pinned(cpus))  # fmt: skip

    def ready(self) -> None:
        wait_listening(self.port, self.proc, "the gateway", "/api/health", timeout=60)
        holders = procfs.listening_pids(self.port)
        if self.args.gateway_pid:
            self.master = self.args.gateway_pid
        elif self.proc is not None:
            self.master = self.proc.pid
        elif holders:
            self.master = min(holders)
        kids = procfs.children(self.master) if self.master else []
        self.workers = [p for p in kids if p in holders] or kids or ([self.master] if self.master else [])

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self._log.close()

    def log_summary(self) -> dict[str, int]:
        if self.proc is None or not self.log_path.exists():
            return {}
        text = self.log_path.read_text(errors="replace")
        return {
            "lines": text.count("\n"),
            "request_lines": text.count('"msg": "request"') + text.count("cortex.request"),
            "tracebacks": text.count("Traceback"),
            "errors": sum(1 for line in text.splitlines() if '"level": "error"' in line or " ERROR " in line),
        }


# --------------------------------------------------------------------------- one run


def loadgen_cmd(sc: Scenario, url: str, headers: list[str]) -> list[str]:
    cmd = [sys.executable, str(HERE / "loadgen.py"), "--url", url, "-c", str(sc.connections),
           "--chunks", str(sc.chunks), "--delay-ms", str(sc.delay_ms), "--warmup", str(sc.warmup),
           "--duration", str(sc.duration), "--ramp", str(sc.ramp), "--timeout", str(sc.timeout)]  # fmt: skip
    if sc.stream:
        cmd.append("--stream")
    if sc.once:
        cmd.append("--once")
    for h in headers:
        cmd += ["-H", h]
    return cmd


def run_one(sc: Scenario, url: str, headers: list[str], server_pids: list[int], upstream_pid: int,
            driver_cpus: set[int] | None) -> dict[str, Any]:  # fmt: skip
    """One load-generator run; samples `server_pids` (CPU over the window, RSS throughout)."""
    sampler = procfs.Sampler(server_pids, interval=0.1)
    sampler.start()
    marks: dict[str, dict[str, Any]] = {}
    proc = subprocess.Popen(loadgen_cmd(sc, url, headers), stdout=subprocess.PIPE, preexec_fn=pinned(driver_cpus))
    result: dict[str, Any] = {}
    bound = sc.warmup + sc.duration + sc.ramp + sc.timeout + 60
    killer = time.monotonic() + bound
    assert proc.stdout is not None
    try:
        for raw in proc.stdout:
            line = raw.decode().strip()
            if line.startswith("mark "):
                name = line.split()[1]
                marks[name] = {"t": time.monotonic(), "server_cpu_s": sum(procfs.cpu_seconds(p) for p in server_pids),
                               "upstream_cpu_s": procfs.cpu_seconds(upstream_pid), "cores": procfs.core_jiffies(),
                               "loadgen_cpu_s": procfs.cpu_seconds(proc.pid)}  # fmt: skip
            elif line.startswith("{"):
                result = json.loads(line)
            if time.monotonic() > killer:
                proc.kill()
                break
        proc.wait(timeout=max(1.0, killer - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sampler.stop()
    if not result or "window" not in marks or "window_end" not in marks:
        return {"failed": f"load generator ended without a result (status {proc.returncode})"}
    w0, w1 = marks["window"], marks["window_end"]
    ok = result["window"]["ok"]
    cpu = w1["server_cpu_s"] - w0["server_cpu_s"]
    ucpu = w1["upstream_cpu_s"] - w0["upstream_cpu_s"]
    result["server"] = {
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_req": round(1000 * cpu / ok, 3) if ok else None,
        "cpu_busy_pct": round(100 * cpu / max(1e-9, w1["t"] - w0["t"]), 1),
        "rss_peak_mib": round(sampler.peak_rss_kib / 1024, 1),
        "rss_end_mib": round(sampler.last_rss_kib / 1024, 1),
        "hwm_mib": round(max((procfs.memory_kib(p)[1] for p in server_pids), default=0) / 1024, 1),
        "fds_peak": sampler.peak_fds,
    }
    result["upstream_cpu_ms_per_req"] = round(1000 * ucpu / ok, 3) if ok else None
    result["core_busy_pct"] = busy = procfs.busy_pct(w0["cores"], w1["cores"])
    # Whose CPU it was over the window, in % of one core: the driver (load generator + mock
    # upstream, sharing one core) and everything else on the machine that is not ours.
    span = max(1e-9, w1["t"] - w0["t"])
    lcpu = w1["loadgen_cpu_s"] - w0["loadgen_cpu_s"]
    ours = lcpu + ucpu + (0 if upstream_pid in server_pids else cpu)
    result["driver_cpu_pct"] = round(100 * (lcpu + ucpu) / span, 1)
    result["foreign_cpu_pct"] = round(max(0.0, sum(busy.values()) - 100 * ours / span), 1)
    return result


# --------------------------------------------------------------------------- report

ROWS = [
    # key, header, getter, decimals
    ("rps", "req/s", lambda r: r["window"]["rps"], 0),
    ("ttfb_p50", "TTFB p50 ms", lambda r: r["window"]["ttfb_ms"]["p50"], 2),
    ("ttfb_p99", "TTFB p99 ms", lambda r: r["window"]["ttfb_ms"]["p99"], 2),
    ("total_p50", "total p50 ms", lambda r: r["window"]["total_ms"]["p50"], 2),
    ("total_p99", "total p99 ms", lambda r: r["window"]["total_ms"]["p99"], 2),
    ("errors", "errors (run)", lambda r: sum(r["all"]["errors"].values()), 0),
    ("intact", "intact % (run)", lambda r: r["all"]["intact_pct"], 2),
    ("cpu", "server CPU ms/req", lambda r: r["server"]["cpu_ms_per_req"], 3),
    ("rss", "server RSS peak MiB", lambda r: r["server"]["rss_peak_mib"], 1),
    ("core", "core0/core1 busy %", None, 0),
]


def value(r: dict[str, Any], getter) -> float | None:  # type: ignore[no-untyped-def]
    try:
        v = getter(r)
        return None if v is None else float(v)
    except (KeyError, TypeError):
        return None


def fmt(v: float | None, nd: int) -> str:
    if v is None:
        return "-"
    return f"{v:,.{nd}f}"


def render_scenario(sc: Scenario, rows: dict[str, dict[str, Any]]) -> list[str]:
    how = (f"{sc.connections:,} clients each sending one request, started over {sc.ramp:g} s; every stream counts"
           if sc.once else
           f"{sc.connections:,} clients, {sc.warmup:g} s warm-up (clients start over {sc.ramp:g} s), "
           f"{sc.duration:g} s measured")  # fmt: skip
    out = [f"### {sc.title}", "", f"{how}; {sc.chunks} chunks, {sc.delay_ms} ms apart; request timeout {sc.timeout:g} s.",
           ""]  # fmt: skip
    names = [n for n in ("direct", "gateway") if n in rows]
    out.append("| | " + " | ".join(h for _, h, _, _ in ROWS) + " |")
    out.append("|---" * (len(ROWS) + 1) + "|")
    for name in names:
        r = rows[name]
        if "failed" in r:
            out.append(f"| {name} | {r['failed']} |" + " |" * (len(ROWS) - 1))
            continue
        cells = []
        for key, _, getter, nd in ROWS:
            if key == "core":
                b = r.get("core_busy_pct", {})
                cells.append(f"{b.get('cpu0', '-')}/{b.get('cpu1', '-')}")
            else:
                cells.append(fmt(value(r, getter), nd))
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    d, g = rows.get("direct"), rows.get("gateway")
    if d and g and "failed" not in d and "failed" not in g:
        over, ratio = [], []
        for key, _, getter, nd in ROWS:
            dv, gv = value(d, getter), value(g, getter)
            if key in ("core", "cpu", "rss", "intact", "errors") or dv is None or gv is None:
                over.append("")
                ratio.append("")
                continue
            over.append(f"{gv - dv:+,.{nd}f}")
            ratio.append(f"x{gv / dv:.3f}" if dv else "-")
        out.append("| overhead (gateway - direct) | " + " | ".join(over) + " |")
        out.append("| ratio (gateway / direct) | " + " | ".join(ratio) + " |")
    extra = []
    for name in names:
        r = rows[name]
        if "failed" in r:
            continue
        a = r["all"]
        errs = ", ".join(f"{k}: {v}" for k, v in sorted(a["errors"].items())) or "none"
        line = (f"- {name}: {a['ok']:,}/{a['requests']:,} intact over the whole run ({errs}); "
                f"peak concurrent requests {r['peak_in_flight']:,}, streams past their first token {r['peak_streaming']:,}; "
                f"driver (load generator + upstream) {r['driver_cpu_pct']} % of its core over the window, "
                f"upstream {fmt(r.get('upstream_cpu_ms_per_req'), 3)} ms CPU/req; "
                f"other processes on the machine {r['foreign_cpu_pct']} % of a core")  # fmt: skip
        if name == "gateway":
            s = r["server"]
            line += (
                f"; worker CPU {s['cpu_busy_pct']} % of a core over the window, RSS at the end "
                f"{s['rss_end_mib']} MiB, kernel peak (VmHWM) {s['hwm_mib']} MiB, open fds peak {s['fds_peak']:,}"
            )
        for kind, sample in sorted(r.get("error_samples", {}).items()):
            line += f"; first `{kind}` answer ended: `{' '.join(sample.split())[-160:]}`"
        if r.get("unfinished"):
            line += f"; {r['unfinished']} clients unfinished at the bound"
        extra.append(line)
    checks = check_targets(sc, rows)
    if checks:
        extra.append("- targets: " + "; ".join(checks))
    return out + [""] + extra + [""]


def metric(sc: Scenario, rows: dict[str, dict[str, Any]], name: str) -> float | None:
    d, g = rows.get("direct", {}), rows.get("gateway", {})
    if "failed" in g or not g:
        return None
    if name == "ttfb_p50_over_ms":
        dv, gv = value(d, ROWS[1][2]), value(g, ROWS[1][2])
        return None if dv is None or gv is None else gv - dv
    if name == "rps_ratio":
        dv, gv = value(d, ROWS[0][2]), value(g, ROWS[0][2])
        return None if not dv or gv is None else gv / dv
    return {"ttfb_p99_ms": value(g, ROWS[2][2]), "intact_all_pct": value(g, ROWS[6][2]),
            "rss_peak_mib": value(g, ROWS[8][2])}.get(name)  # fmt: skip


def check_targets(sc: Scenario, rows: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    for name, op, limit in sc.targets:
        v = metric(sc, rows, name)
        if v is None:
            out.append(f"{name} {op} {limit:g}: not measured")
            continue
        met = {"<=": v <= limit, "<": v < limit, ">=": v >= limit}[op]
        out.append(f"{name} = {v:,.3f} ({op} {limit:g}: {'met' if met else 'MISSED'})")
    return out


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def machine_facts() -> dict[str, Any]:
    def out(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return "?"

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "?")  # fmt: skip
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])

    def sysctl(name: str) -> str:
        try:
            return " ".join(Path("/proc/sys/" + name.replace(".", "/")).read_text().split())
        except OSError:
            return "?"

    return {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "cpu": model,
        "cores": os.cpu_count(),
        "mem_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": {
            p: package_version(p) for p in ("gunicorn", "gevent", "greenlet", "flask", "werkzeug", "requests")
        },
        "git_commit": out("git", "rev-parse", "--short=12", "HEAD"),
        "git_dirty": bool(out("git", "status", "--porcelain", "--untracked-files=no")),
        "somaxconn": sysctl("net.core.somaxconn"),
        "ip_local_port_range": sysctl("net.ipv4.ip_local_port_range"),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
    }


# --------------------------------------------------------------------------- main


def preflight(url: str, headers: list[str]) -> str | None:
    """One streamed and one non-streamed request through the loadgen code, checked end to end."""
    for stream in (True, False):
        cmd = [sys.executable, str(HERE / "loadgen.py"), "--url", url, "-c", "1", "--once", "--chunks", "5",
               "--timeout", "10"] + (["--stream"] if stream else [])  # fmt: skip
        for h in headers:
            cmd += ["-H", h]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        result = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}
        if not result or result["all"]["ok"] != 1:
            return f"preflight ({'stream' if stream else 'json'}) failed: {result.get('all', {}).get('errors') or done.stderr[-300:]}"
    return None


def upstream_requests(port: int) -> int:
    return int(json.loads(http_get(port, "/stats")[1])["requests"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])  # fmt: skip
    ap.add_argument(
        "--scenarios", default=DEFAULT_SCENARIOS, help=f"comma list of {', '.join(SCENARIOS)} (default all)"
    )
    ap.add_argument(
        "--edges",
        choices=("on", "off"),
        default="on",
        help="on: client auth, RATE_LIMIT, CORS, JSON logs (default); off: the bare configuration",
    )
    ap.add_argument(
        "--target", help="an already running gateway (http://127.0.0.1:PORT); it must forward to --upstream-port"
    )
    ap.add_argument("--gateway-pid", type=int, help="its master PID (default: found from the listening port)")
    ap.add_argument(
        "--gateway-cmd", help="command that starts the gateway instead of gunicorn (gets the same env, PORT)"
    )
    ap.add_argument(
        "-H", "--header", action="append", default=[], help="extra request header for the gateway (repeatable)"
    )
    ap.add_argument("--upstream-port", type=int, default=0, help="mock upstream port (default: a free one)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    ap.add_argument("--no-direct", action="store_true", help="skip the direct runs")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SCENARIO.FIELD=VALUE",
        help="override a scenario field, e.g. c10k.connections=2000 or a.duration=5 (repeatable)",
    )
    ap.add_argument("--pause", type=float, default=1.0, help="seconds between runs")
    ap.add_argument("--out", default=str(HERE / "results"), help="results directory (default bench/results)")
    return ap.parse_args(argv)


def apply_overrides(scenarios: list[Scenario], sets: list[str]) -> None:
    by_name = {s.name: s for s in scenarios}
    for item in sets:
        m = re.fullmatch(r"(\w+)\.(\w+)=(.+)", item)
        if not m or m.group(1) not in by_name or m.group(2) not in Scenario.__dataclass_fields__:
            raise SystemExit(f"--set {item}: expected SCENARIO.FIELD=VALUE for a selected scenario")
        sc = by_name[m.group(1)]
        raw = m.group(3)
        kind = Scenario.__dataclass_fields__[m.group(2)].type  # a string: annotations are postponed
        if kind == "bool":
            setattr(sc, m.group(2), raw.lower() in ("1", "true", "yes"))
        elif kind in ("int", "float", "str"):
            setattr(sc, m.group(2), {"int": int, "float": float, "str": str}[kind](raw))
        else:
            raise SystemExit(f"--set {item}: {m.group(2)} cannot be set from the command line")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(
        shlex.quote(a) for a in ([os.path.relpath(sys.executable, ROOT), "bench/bench.py"] + sys.argv[1:])
    )
    if os.environ.get("MAKELEVEL"):
        command = f"make bench, which ran: {command}"
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    scenarios = [SCENARIOS[n] for n in names]
    apply_overrides(scenarios, args.set)
    raise_nofile()
    facts = machine_facts()  # before the run: the commit and tree that were measured
    notes = [n for n in (fit_streams(sc) for sc in scenarios) if n]
    for n in notes:
        log(f"note: {n}")

    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and {0, 1} <= os.sched_getaffinity(0)
    gateway_cpus, driver_cpus = ({0}, {1}) if pin else (None, None)
    if pin:
        os.sched_setaffinity(0, {1})  # the harness itself sits with the driver
    log_dir = Path(tempfile.mkdtemp(prefix="cortex-bench-"))
    upstream_port = args.upstream_port or free_port()
    upstream = subprocess.Popen([sys.executable, str(HERE / "upstream.py"), "--port", str(upstream_port)],
                                stdout=subprocess.DEVNULL, preexec_fn=pinned(driver_cpus))  # fmt: skip
    gateway: Gateway | None = None
    saved_affinity: dict[int, set[int]] = {}
    results: dict[str, dict[str, dict[str, Any]]] = {}
    interrupted = False

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        wait_listening(upstream_port, upstream, "the mock upstream", "/health")
        gateway = Gateway(args, upstream_port, gateway_cpus, log_dir)
        gateway.ready()
        if pin and args.target:  # a gateway we did not start: pinned for the run, restored after it
            for pid in [gateway.master, *gateway.workers]:
                saved_affinity[pid] = os.sched_getaffinity(pid)
                for tid in os.listdir(f"/proc/{pid}/task"):
                    os.sched_setaffinity(int(tid), gateway_cpus)  # type: ignore[arg-type]
        headers = list(args.header)
        if args.edges == "on" and not args.target:
            headers.append(f"Authorization: Bearer {BENCH_KEY}")
        gw_path = urlpath(args.target) if args.target else "/v1/chat/completions"
        gw_url = f"http://127.0.0.1:{gateway.port}{gw_path}"
        direct_url = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
        log(
            f"upstream pid {upstream.pid} on :{upstream_port}; gateway master {gateway.master} workers "
            f"{gateway.workers} on :{gateway.port}; pinning {'gateway CPU 0, driver CPU 1' if pin else 'off'}"
        )
        before = upstream_requests(upstream_port)
        problem = preflight(direct_url, []) or preflight(gw_url, headers)
        if problem:
            raise SystemExit(f"{problem} (gateway log: {gateway.log_path})")
        if upstream_requests(upstream_port) < before + 4:
            raise SystemExit("the gateway answered without asking the mock upstream: check its configuration")
        for sc in scenarios:
            results[sc.name] = {}
            targets = ([] if args.no_direct else [("direct", direct_url, [], [upstream.pid])]) + [
                ("gateway", gw_url, headers, gateway.workers)]  # fmt: skip
            for name, url, hdrs, pids in targets:
                if name == "gateway" and gateway.proc is not None and gateway.proc.poll() is not None:
                    results[sc.name][name] = {"failed": f"the gateway exited (status {gateway.proc.returncode})"}
                    log(f"{sc.name} {name}: skipped, the gateway exited with status {gateway.proc.returncode}")
                    continue
                log(f"{sc.name} {name}: {sc.connections} clients ...")
                r = run_one(sc, url, hdrs, pids, upstream.pid, driver_cpus)
                results[sc.name][name] = r
                if "failed" in r:
                    log(f"   {r['failed']}")
                else:
                    w = r["window"]
                    log(
                        f"   {w['rps']} req/s, ttfb p50 {w['ttfb_ms']['p50']} p99 {w['ttfb_ms']['p99']} ms, "
                        f"intact {r['all']['ok']}/{r['all']['requests']}, cpu {r['server']['cpu_ms_per_req']} ms/req, "
                        f"rss {r['server']['rss_peak_mib']} MiB, cores {r['core_busy_pct']}"
                    )
                time.sleep(args.pause)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: writing what was measured")
    finally:
        gateway_log = gateway.log_summary() if gateway is not None else {}
        if gateway is not None:
            gateway.stop()
        for pid, cpus in saved_affinity.items():
            for tid in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}") else []:
                try:
                    os.sched_setaffinity(int(tid), cpus)
                except OSError:
                    pass
        stop_process(upstream, grace=5)

    config = {
        "edges": args.edges if not args.target else "as its operator configured it (--target)",
        "pinning": "gateway (master + worker) on CPU 0; harness, mock upstream and load generator on CPU 1"
        if pin
        else "none (kernel scheduling)",
        "gateway_command": gateway.command if gateway else "",
        "gateway_env": getattr(gateway, "env_shown", {}),
        "gateway_log": gateway_log,
        "notes": notes,
    }
    text = render(facts, config, command, scenarios, results, interrupted)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    (out / f"{stamp}.md").write_text(text)
    (out / f"{stamp}.json").write_text(json.dumps({
        "facts": facts, "command": command, "config": config, "scenarios": [asdict(s) for s in scenarios],
        "results": results, "interrupted": interrupted}, indent=1) + "\n")  # fmt: skip
    log(f"written {out / stamp}.md and .json")
    return 130 if interrupted else 0


def urlpath(url: str) -> str:
    path = re.sub(r"^http://[^/]+", "", url).rstrip("/")
    return path if path.endswith("/chat/completions") else path + "/v1/chat/completions"


def render(facts: dict[str, Any], config: dict[str, Any], command: str, scenarios: list[Scenario],
           results: dict[str, dict[str, dict[str, Any]]], interrupted: bool) -> str:  # fmt: skip
    v = facts["versions"]
    lines = [
        f"# Cortex benchmark, started {facts['date_utc']}" + (" (interrupted: partial)" if interrupted else ""),
        "",
        f"- command: `{command}`",
        f"- machine: {facts['cpu']}, {facts['cores']} cores, {facts['mem_gib']} GiB, Linux {facts['kernel']}; "
        f"somaxconn {facts['somaxconn']}, ports {facts['ip_local_port_range']}, open files {facts['nofile'][0]}",
        f"- software: Python {facts['python']}, "
        + ", ".join(f"{k} {x}" for k, x in v.items())
        + f"; commit {facts['git_commit']}{' (dirty)' if facts['git_dirty'] else ''}",
        f"- gateway: `{config['gateway_command']}`, "
        + ("one gevent worker process, " if config["gateway_env"] else "")
        + f"edges {config['edges']}",
        "  (" + ", ".join(f"{k}={x}" for k, x in sorted(config["gateway_env"].items())) + ")",
        f"- placement: {config['pinning']}",
        f"- gateway log: {config['gateway_log']}",
        *[f"- note: {n}" for n in config["notes"]],
        "",
        "Rows: direct = load generator straight to the mock upstream; gateway = the same load through Cortex. "
        "req/s and latencies over the measured window (c10k: the whole run); errors and intact % over the whole "
        "run, warm-up included; server CPU ms/req = utime+stime of the server process over the window / "
        "successful requests in it (direct: the mock upstream); RSS = peak VmRSS sampled every 100 ms.",
        "",
    ]
    for sc in scenarios:
        if sc.name in results:
            lines += render_scenario(sc, results[sc.name])
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
