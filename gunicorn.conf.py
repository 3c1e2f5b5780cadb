"""gunicorn settings for Cortex. Every value comes from the environment, with a default
suited to long-lived token streams. Run: gunicorn -c gunicorn.conf.py wsgi:app"""

import os
import sys


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        sys.exit(f"cortex: configuration error: {name}: expected an integer, got {raw!r}")


# Where to listen. HOST defaults to loopback: set HOST=0.0.0.0 to serve other machines
# (and then set client auth), e.g. inside a container.
bind = f"{os.environ.get('HOST', '127.0.0.1')}:{_int('PORT', 4000)}"

# Processes. Each gevent worker serves thousands of concurrent streams on one core, so one
# worker per core is the right number (WEB_CONCURRENCY is the conventional variable).
workers = _int("WEB_CONCURRENCY", os.cpu_count() or 1)
worker_class = "gevent"
# Concurrent connections per worker process: each stream holds one, and a gevent worker holds
# 10,000 slow streams in well under 1 GiB (bench/README.md, scenario c10k). Each stream also
# holds an upstream connection: 10,000 streams need about 20,000 file descriptors, see below.
worker_connections = _int("WORKER_CONNECTIONS", 10000)
# Pending connections the kernel queues; the kernel caps it at net.core.somaxconn.
backlog = _int("BACKLOG", 4096)


def _raise_open_files_limit() -> None:
    """Raise the soft limit of open files to the hard one, as nginx's worker_rlimit_nofile
    does: the common soft default (1024) would refuse the 1,000th stream. The hard limit is the
    operator's to raise (ulimit -Hn, LimitNOFILE= in systemd, the container runtime)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


_raise_open_files_limit()

# The gevent worker's heartbeat runs in its own greenlet, so a long stream never trips this;
# it only catches a worker whose event loop is blocked.
timeout = _int("WORKER_TIMEOUT", 30)
# On SIGTERM/SIGHUP, in-flight streams get this long to finish before the worker is killed.
# About a second before it runs out, the streams still running end with an explicit error
# marker (code shutting_down), so no client mistakes a cut stream for a whole one.
graceful_timeout = _int("GRACEFUL_TIMEOUT", 60)
# Idle keep-alive between requests on one client connection.
keepalive = _int("KEEPALIVE", 5)

# Never preload: the app must be imported after gevent patched the worker (see wsgi.py).
preload_app = False

errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# Access log off by default: Cortex logs one line per request itself (app/request_log.py, with
# its id, client, worker, tokens and outcome; LOG_FORMAT=json for JSON). ACCESS_LOG=- for stdout.
accesslog = os.environ.get("ACCESS_LOG") or None

# gunicorn's control socket (for `gunicornc`) defaults to one path per user
# ($XDG_RUNTIME_DIR or ~/.gunicorn/gunicorn.ctl), so two gunicorns on one machine unlink each
# other's. Off unless CONTROL_SOCKET names a path for this instance.
control_socket = os.environ.get("CONTROL_SOCKET") or "gunicorn.ctl"
control_socket_disable = not os.environ.get("CONTROL_SOCKET")
proc_name = "cortex"


_created_state_dir = None


def on_starting(server):  # noqa: ARG001
    """Prepare the state directory the worker processes share (app/state_dir.py; it must exist
    before they fork, and prometheus_client reads PROMETHEUS_MULTIPROC_DIR when a worker
    imports it), then validate configuration once in the master, so a bad setting stops
    start-up with one clear line instead of a traceback from every worker."""
    global _created_state_dir
    from app.settings import ConfigError, load_from_environment
    from app.state_dir import prepare

    path, created = prepare(os.environ)
    _created_state_dir = path if created else None

    try:
        load_from_environment()
    except ConfigError as exc:
        sys.exit(f"cortex: configuration error: {exc}")


def post_worker_init(worker):
    """Start the app's background greenlets (health checks, shared state) in this worker process, and make
    its SIGTERM end the streams still running at the graceful deadline with an error marker
    instead of a silent cut (app/lifecycle.py)."""
    from app.lifecycle import on_sigterm

    gateway = worker.wsgi.extensions["cortex"]
    gateway.start()
    on_sigterm(worker.handle_exit, gateway.in_flight, worker.cfg.graceful_timeout)


def worker_int(worker):
    """SIGINT/SIGQUIT (a quick shutdown, e.g. Ctrl-C): the worker exits right after this hook,
    so end the requests in flight with their error marker now, and give them a second to flush."""
    gateway = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("cortex")
    if gateway is not None:
        gateway.in_flight.stop_now(flush=1.0)


def worker_exit(server, worker):  # noqa: ARG001
    gateway = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("cortex")
    if gateway is not None:
        gateway.stop()


def child_exit(server, worker):  # noqa: ARG001
    """A worker process ended (in the master): drop its live gauges (cortex_streams_in_flight,
    the worker gauges) from the metrics directory, so a dead process's in-flight streams stop
    being counted. Its counters stay: they still belong in the totals. (What prometheus_client's
    mark_process_dead does, without importing it: it imports ssl and socket, and the master
    must not have them imported when it forks the replacement.)"""
    from app.state_dir import drop_live_gauges

    drop_live_gauges(os.environ, worker.pid)


def on_exit(server):  # noqa: ARG001
    """Remove the state directory if we made it (a CORTEX_STATE_DIR of the operator's stays)."""
    if _created_state_dir is not None:
        from app.state_dir import remove

        remove(_created_state_dir)


def on_reload(server):  # noqa: ARG001
    """SIGHUP: journal a reload of the configuration file, so the new worker processes start
    from the file instead of replaying admin changes made before it (app/admin_journal.py)."""
    from app.admin_journal import record_restart

    record_restart(os.environ)
