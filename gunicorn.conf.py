"""Gunicorn settings for the standalone server: `gunicorn -c gunicorn.conf.py wsgi:app`.

They are the package's own, commented there (switchboard_server/transport/gunicorn_config.py):
the worker class that answers `/ws` handshakes early and closes sockets with 1001 on exit, the
bind address (SWITCHBOARD_BIND_HOST, PORT), workers (SWITCHBOARD_WORKERS, one per core with
Redis), the file limit, and the metrics directory shared by the workers. Override any of them
below this line.
"""

from switchboard_server.transport.gunicorn_config import *  # noqa: F403
