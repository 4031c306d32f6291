"""Gunicorn settings for Switchboard: `gunicorn -c gunicorn.conf.py wsgi:app`.

Each setting says why it has its value. Environment: PORT (default 8000), SWITCHBOARD_WORKERS
(default 1), SWITCHBOARD_BIND_HOST (default 127.0.0.1; put nginx in front for the outside world).
"""

import os
import resource
import sys

bind = f"{os.environ.get('SWITCHBOARD_BIND_HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"

# Every WebSocket is a greenlet; the gevent worker runs them all on one core per worker.
worker_class = "gevent"

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

# On SIGTERM, time for HTTP requests in flight; WebSockets are closed with 1001 in worker_exit.
graceful_timeout = 10

# Also bounds how long a client may take to send its request headers (slowloris); keep it above 0.
keepalive = 5

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


def worker_exit(server, worker):
    """Say goodbye properly: every client gets close 1001 (going away) before the worker exits."""
    hub = worker.wsgi.extensions.get("switchboard") if hasattr(worker, "wsgi") else None
    if hub is not None:
        hub.shutdown(timeout=5.0)
