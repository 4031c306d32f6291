"""The demo page (GET /) and the two routes only it needs: a token for any name, and history.

Both routes hand a browser what the HTTP API keeps behind its key (a token for any user name, any
channel's history), so the whole blueprint answers 404 unless `SWITCHBOARD_DEMO=1`: never turn it
on in production. The client library itself (/static/switchboard.js) is served either way.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from flask import Blueprint, Response, current_app, jsonify, request, send_from_directory

from switchboard_server.core.errors import ProtocolError
from switchboard_server.routes import current_hub

bp = Blueprint("demo", __name__)

# Long enough for a name, short enough that the who's-online list stays readable.
MAX_NAME = 32
# The React example as Vite builds it (npm run build:example); it uses the token route below.
REACT_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "react-graphql" / "dist"


@bp.before_request
def require_demo() -> None:
    if not current_hub().config.demo:
        raise ProtocolError("not_found", "the demo is off: start the server with SWITCHBOARD_DEMO=1")


@bp.get("/")
def index():
    return send_from_directory(current_app.static_folder, "index.html")


@bp.get("/examples/react-graphql/", defaults={"path": "index.html"})
@bp.get("/examples/react-graphql/<path:path>")
def react_example(path: str):
    """examples/react-graphql, built: chat and presence over /ws, an activity feed over /graphql."""
    if not (REACT_EXAMPLE / "index.html").is_file():
        raise ProtocolError("not_found", "the React example is not built: run `npm ci && npm run build:example`")
    return send_from_directory(REACT_EXAMPLE, path)


@bp.get("/demo/token")
def token():
    """A connection token for whatever name the page asks for: the demo trusts everyone, and
    lets everyone into every presence- room (where the chat rooms are)."""
    name = request.args.get("name", "").strip()
    if not 1 <= len(name) <= MAX_NAME:
        raise ProtocolError("bad_request", f"name must be 1 to {MAX_NAME} characters")
    minted, expires = current_hub().tokens.mint(name, channels=["presence-*"], publish=True)
    return jsonify(token=minted, user=name, expires=expires)


@bp.get("/demo/history/<channel>")
def history(channel: str):
    """The channel's newest `limit` held messages, oldest first, shaped like the API's history.

    The page reloads from here when a reconnect could not recover (after a server restart).
    """
    raw = request.args.get("limit", "50")
    if not raw.isdigit():
        raise ProtocolError("bad_request", "limit must be a non-negative integer")
    epoch, last, messages = current_hub().history(channel)
    messages = messages[max(0, len(messages) - int(raw)) :]
    # Messages are kept as the JSON they were sent as; splice them in rather than re-encode.
    head = orjson.dumps({"channel": channel, "epoch": epoch, "offset": last})[:-1]
    return Response(head + b',"messages":[' + b",".join(messages) + b"]}", mimetype="application/json")
