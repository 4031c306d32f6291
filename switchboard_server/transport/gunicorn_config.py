"""Gunicorn settings for Switchboard: `gunicorn -c python:switchboard_server.transport.gunicorn_config APP`.

The standalone server's gunicorn.conf.py and the `switchboard-server` command use these; a host
app that mounts the extension may too, or take what it needs (the worker class above all).

Each setting says why it has its value. Environment: PORT (default 8000), SWITCHBOARD_WORKERS
(default 1), SWITCHBOARD_BIND_HOST (default 127.0.0.1; put nginx in front for the outside world),
SWITCHBOARD_METRICS (a host:port there is listened on too, for /metrics alone).
"""

import os
import resource
import shutil
import sys
import tempfile
from pathlib import Path

bind = [f"{os.environ.get('SWITCHBOARD_BIND_HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"]
if ":" in os.environ.get("SWITCHBOARD_METRICS", ""):
    bind.append(os.environ["SWITCHBOARD_METRICS"])

# The metrics directory on_starting made, if it made one: on_exit removes it.
_made_metrics_dir = []

# Every WebSocket is a greenlet; gevent's worker runs them all on one core per worker. This is
# Gunicorn's own gevent worker with the `/ws` handshake answered before Gunicorn's HTTP parser and
# Flask (transport/worker.py), and it closes every WebSocket with 1001 when the worker exits.
worker_class = "switchboard_server.transport.worker.Worker"

# The in-process hub sees only its own worker's clients, so without Redis one worker is the
# default and more are refused (see on_starting). With Redis, one worker per core.
workers = int(
    os.environ.get("SWITCHBOARD_WORKERS") or (os.cpu_count() or 1 if os.environ.get("SWITCHBOARD_REDIS_URL") else 1)
)

# Gunicorn's default of 1,000 makes the 1,001st client wait forever. Sockets leave Gunicorn's
# pool once upgraded, so this bounds handshakes and HTTP requests in flight; the real ceiling on
# sockets is the file limit raised below.
worker_connections = 20000

# A worker that does not check in for this long is killed and replaced.
timeout = 30

# On SIGTERM (and for the old workers of a reload), the time a worker has before it is killed: the
# drain's window (SWITCHBOARD_DRAIN_WINDOW, 5 s: connections closed in batches, docs/deployment.md),
# then up to 5 s for the last closing handshakes and HTTP requests in flight, and a margin.
graceful_timeout = 15

# Also bounds how long a client may take to send its request headers (slowloris); keep it above 0.
keepalive = 2

# Gunicorn 27's runtime control socket is one fixed path per user: two instances would fight over
# it, and nothing here uses it.
control_socket_disable = True

# Never preload: the hub and its greenlets must be created in the worker, after gevent patches.
preload_app = False


def on_starting(server):
    """Refuse configurations that would silently split clients, and raise the file limit."""
    if server.cfg.workers > 1 and not os.environ.get("SWITCHBOARD_REDIS_URL"):
        sys.exit(
            f"Switchboard: {server.cfg.workers} workers were asked for, but the in-process hub "
            "cannot connect clients on different workers. Run one worker (SWITCHBOARD_WORKERS=1), "
            "or set SWITCHBOARD_REDIS_URL so the workers share a Redis broker."
        )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # prometheus-client's multiprocess mode: each worker writes its metrics to files in this
    # directory and a scrape of any worker adds them all up. Workers read it when they import
    # prometheus_client, so it is set here, in the master, before any fork: a fresh directory per
    # start, unless the operator names one, which is emptied as prometheus-client asks.
    named = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if named:
        _prepare_metrics_dir(Path(named))
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="switchboard-metrics-")
        _made_metrics_dir.append(os.environ["PROMETHEUS_MULTIPROC_DIR"])


def _prepare_metrics_dir(directory: Path) -> None:
    """Make the operator's metrics directory if it is not there yet (a worker would fail to boot
    without it), and empty it; refuse to start, saying why, if neither can be done."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
    except OSError as error:
        sys.exit(f"Switchboard: PROMETHEUS_MULTIPROC_DIR={directory} cannot be used for metrics: {error}")


def child_exit(server, worker):
    """A dead worker's open connections no longer count; its counters still do."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the metrics directory on_starting made (never one the operator named)."""
    for directory in _made_metrics_dir:
        shutil.rmtree(directory, ignore_errors=True)
