"""Pusher's routes: the WebSocket `/app/<key>` and the HTTP API `/apps/<app_id>/...` (docs/pusher.md).

Thin: the handshake goes through routes/websocket.py's `upgrade`, with a Pusher socket id as the
connection's id, and a refused connection (unknown key, protocol, capacity) is told so after the
upgrade with Pusher's `pusher:error` and close code, which is all pusher-js can read. The HTTP API
checks Pusher's request signature and calls the hub; its errors are plain text with Pusher's
statuses (400, 401, 403, 404, 413), as the Pusher server libraries expect.
"""

from __future__ import annotations

import logging
import re
import time

import orjson
from flask import Response, g, request
from werkzeug.exceptions import HTTPException

from switchboard_server.core.auth import Identity
from switchboard_server.core.errors import ProtocolError
from switchboard_server.core.hooks import connect_identity
from switchboard_server.protocols.pusher.apps import App
from switchboard_server.protocols.pusher.events import MAX_EVENT_NAME, PRESENCE, stored_data
from switchboard_server.protocols.pusher.service import PusherService
from switchboard_server.protocols.pusher.session import ENCRYPTED, refuse
from switchboard_server.protocols.pusher.signing import verify_request
from switchboard_server.routes import current_hub, current_state
from switchboard_server.routes.blueprint import blueprint
from switchboard_server.routes.websocket import handshake, refuse_draining, upgrade

log = logging.getLogger("switchboard.pusher")

bp = blueprint("pusher", __name__)

SOCKET_ID = re.compile(r"\d+\.\d+")
MAX_CHANNELS = 100  # per trigger, as Pusher
MAX_BATCH = 10  # events per batch, as Pusher
_INFO = ("user_count", "subscription_count")
UNAUTHORIZED = 4009  # Pusher's "connection is unauthorized": the application's connect hook refused


def current_pusher() -> PusherService:
    return current_state().pusher


# -- the WebSocket -----------------------------------------------------------------------------


@bp.route("/app/<key>", websocket=True)
def connect(key: str):
    pusher = current_pusher()
    if pusher.hub.draining:
        return refuse_draining()
    socket_id = pusher.new_socket_id()
    identity = Identity(user=socket_id)  # Pusher connections are anonymous: the app key lets them in
    address = request.remote_addr or ""
    session, code, reason = pusher.admit(key, request.args.get("protocol"), identity, address)
    if session is not None:
        try:  # the application's connect hook may name the user (a session cookie) or refuse
            identity = connect_identity(pusher.hub.hooks, handshake(), identity)
        except ProtocolError as refused:
            session, code, reason = None, UNAUTHORIZED, refused.message
    if session is None:
        pusher.hub.counters[f"refused_pusher_{code}"] += 1
        log.warning("pusher connection refused", extra={"address": address, "code": code, "reason": reason})
        return upgrade(lambda conn: refuse(pusher.hub, conn, code, reason), identity, client_id=socket_id)
    return upgrade(session.serve, identity, client_id=socket_id)


# -- the HTTP API ------------------------------------------------------------------------------


@bp.post("/apps/<app_id>/events")
def trigger(app_id: str):
    app, body = _signed(app_id)
    channels = body.get("channels", [body["channel"]] if "channel" in body else None)
    if not isinstance(channels, list) or not 1 <= len(channels) <= MAX_CHANNELS:
        raise ProtocolError("bad_request", f'"channels" must list 1 to {MAX_CHANNELS} channels')
    _publish(app, [_event(app, body, channels)])
    return _json({})


@bp.post("/apps/<app_id>/batch_events")
def trigger_batch(app_id: str):
    app, body = _signed(app_id)
    batch = body.get("batch")
    if not isinstance(batch, list) or not 1 <= len(batch) <= MAX_BATCH or not all(isinstance(e, dict) for e in batch):
        raise ProtocolError("bad_request", f'"batch" must list 1 to {MAX_BATCH} events')
    # Every event is checked before any is published: a bad one refuses the batch, not half of it.
    _publish(app, [_event(app, entry, [entry.get("channel")]) for entry in batch])
    return _json({})


@bp.get("/apps/<app_id>/channels")
def channels(app_id: str):
    app, _ = _signed(app_id)
    prefix = request.args.get("filter_by_prefix", "")
    info = _info(prefix)
    hub = current_hub()
    found = {}
    for hub_name, subscribers in hub.channel_counts().items():
        name = app.pusher_channel(hub_name)
        if name is not None and name.startswith(prefix):
            found[name] = _attributes(hub_name, subscribers, info)
    return _json({"channels": found})


@bp.get("/apps/<app_id>/channels/<channel>")
def channel(app_id: str, channel: str):
    app, _ = _signed(app_id)
    hub_name = _hub_channel(app, channel)
    info = _info(channel)
    subscribers = current_hub().channel_counts().get(hub_name, 0)
    return _json({"occupied": subscribers > 0, **_attributes(hub_name, subscribers, info)})


@bp.get("/apps/<app_id>/channels/<channel>/users")
def users(app_id: str, channel: str):
    app, _ = _signed(app_id)
    hub_name = _hub_channel(app, channel)
    if not channel.startswith(PRESENCE):
        raise ProtocolError("bad_request", "users are listed only for presence- channels")
    return _json({"users": [{"id": member["user"]} for member in current_hub().presence(hub_name)]})


def _signed(app_id: str) -> tuple[App, dict]:
    """The app a request is for, once its signature checks out, and its JSON body (or {})."""
    app = current_pusher().apps.by_id.get(app_id)
    if app is None:
        raise ProtocolError("not_found", f"Unknown app id {app_id[:32]}")
    raw = request.get_data(cache=False)
    verify_request(app, request.method, request.path, request.args.to_dict(), raw, time.time())
    if not raw:
        return app, {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("bad_request", f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError("bad_request", "body must be a JSON object")
    return app, body


def _hub_channel(app: App, name: str) -> str:
    if not app.valid_channel(name):
        raise ProtocolError("bad_request", f"invalid channel name {name[:64]!r}")
    return app.hub_channel(name)


def _event(app: App, body: dict, channels: list) -> tuple[list[str], str, object, str]:
    """A validated event: (hub channels, name, data as stored, socket id to exclude or "")."""
    name, data, socket_id = body.get("name"), body.get("data"), body.get("socket_id", "")
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_EVENT_NAME:
        raise ProtocolError("bad_request", f'"name" must be an event name of 1 to {MAX_EVENT_NAME} characters')
    if "data" not in body:
        raise ProtocolError("bad_request", 'an event needs "data"')
    if not isinstance(socket_id, str) or (socket_id and not SOCKET_ID.fullmatch(socket_id)):
        raise ProtocolError("bad_request", '"socket_id" must be a socket id such as "1234.5678"')
    hub_channels = []
    for channel in channels:
        if not isinstance(channel, str):
            raise ProtocolError("bad_request", "channel names must be strings")
        if channel.startswith(ENCRYPTED):
            raise ProtocolError("bad_request", "encrypted channels (private-encrypted-) are not supported")
        hub_channels.append(_hub_channel(app, channel))
    return hub_channels, name, stored_data(data), socket_id


def _publish(app: App, events: list[tuple[list[str], str, object, str]]) -> None:
    hub = current_hub()
    for hub_channels, name, data, socket_id in events:
        for hub_name in hub_channels:
            hub.publish(hub_name, data, event=name, exclude=socket_id, api=True)
            hub.counters["publishes_pusher_http"] += 1


def _info(channel_or_prefix: str) -> list[str]:
    """The attributes asked for with `info`; user_count only for presence channels, as Pusher."""
    asked = [name for name in request.args.get("info", "").split(",") if name]
    for name in asked:
        if name not in _INFO:
            raise ProtocolError("bad_request", f"unknown info attribute {name[:32]!r}: expected {', '.join(_INFO)}")
    if "user_count" in asked and not channel_or_prefix.startswith(PRESENCE):
        raise ProtocolError("bad_request", "user_count is available only for presence- channels")
    return asked


def _attributes(hub_name: str, subscribers: int, info: list[str]) -> dict:
    attributes = {}
    if "subscription_count" in info:
        attributes["subscription_count"] = subscribers
    if "user_count" in info:
        attributes["user_count"] = len(current_hub().presence(hub_name)) if subscribers else 0
    return attributes


def _json(value: object) -> Response:
    return Response(orjson.dumps(value), mimetype="application/json")


# -- errors and logs ---------------------------------------------------------------------------


@bp.errorhandler(ProtocolError)
def protocol_error(error: ProtocolError) -> Response:
    return Response(error.message + "\n", status=error.http_status, mimetype="text/plain")


@bp.errorhandler(HTTPException)
def http_error(error: HTTPException) -> Response:
    return Response(f"{error.description or error.name}\n", status=error.code or 500, mimetype="text/plain")


@bp.before_request
def start_request() -> None:
    g.pusher_started = time.monotonic()


@bp.after_request
def log_request(response: Response) -> Response:
    """One line per API request; none for a WebSocket, which the hub logs. Never the query string,
    which carries the signature."""
    if request.endpoint != "pusher.connect":
        log.info(
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration": round(time.monotonic() - g.pusher_started, 4),
                "address": request.remote_addr,
            },
        )
    return response
