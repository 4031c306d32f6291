"""The sync client in a gevent-patched process, as in a Gunicorn gevent worker of another service.

The script patches first, then subscribes in one greenlet while another publishes through the same
client (each waits on the other's reads), then lives through a server restart.
"""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
from gevent import monkey

monkey.patch_all()

import json
import sys

import gevent
from switchboard_client import RecoveryError, connect

url = sys.argv[1]
with connect(url, min_delay=0.05) as client:
    subscription = client.subscribe("green")
    publisher = gevent.spawn(lambda: [client.publish("green", n) for n in range(50)])
    got = [subscription.recv(10).data for _ in range(50)]
    publisher.get(timeout=10)
    print(json.dumps({"got": got, "patched": monkey.is_module_patched("threading")}), flush=True)
    sys.stdin.readline()  # the test restarts the server, then says so
    offset = client.publish("green", "after")
    try:
        subscription.recv(10)
        told = False
    except RecoveryError:
        told = True
    message = subscription.recv(10)
    print(json.dumps({"told": told, "after": [message.data, message.offset == offset]}), flush=True)
"""


def test_the_sync_client_works_under_gevent(start_server):
    server = start_server()
    script = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, server.ws_url + "/ws"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = json.loads(script.stdout.readline() or "null")
        assert first == {"got": list(range(50)), "patched": True}, script.stderr.read()
        server.stop()
        start_server(port=server.port)
        script.stdin.write("restarted\n")
        script.stdin.flush()
        second = json.loads(script.stdout.readline() or "null")
        assert second == {"told": True, "after": ["after", True]}, script.stderr.read()
        assert script.wait(15) == 0
    finally:
        script.kill()
        script.wait()
