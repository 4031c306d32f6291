"""The HTTP API for other services: publish, channels, presence, history and token minting.

Every route needs `Authorization: Bearer <SWITCHBOARD_API_KEY>`; without a configured key the API
is closed (403) rather than open, and says how to open it. Every request gets an id (the caller's
`X-Request-ID`, or a new one), echoed in the response and in its log line; the line never holds a
header, a body or a query string.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import time

import orjson
from flask import Response, g, request

from switchboard_server.core.envelope import validate_channel, validate_event, validate_idempotency_key
from switchboard_server.core.errors import ProtocolError
from switchboard_server.routes import current_hub
from switchboard_server.routes.blueprint import blueprint

log = logging.getLogger("switchboard.api")

bp = blueprint("api", __name__, url_prefix="/api")

# A caller's request id is kept only if it cannot disguise itself as something else in a log line.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _json(value: object, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status=status, mimetype="application/json")


def _body() -> dict:
    """The request's JSON object; a chunked body over the limit was refused before (errors.py)."""
    limit = current_hub().config.max_message_size
    if (request.content_length or 0) > limit:
        raise ProtocolError("too_large", f"body larger than {limit} bytes")
    try:
        body = orjson.loads(request.get_data(cache=False))
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("bad_json", f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError("bad_request", "body must be a JSON object")
    return body


def _int_arg(name: str, default: int | None) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise ProtocolError("bad_request", f"{name} must be a non-negative integer")
    return int(raw)


@bp.before_request
def start_request() -> None:
    """Runs before the key check, so refused requests are logged with their id too."""
    given = request.headers.get("X-Request-ID", "")
    g.request_id = given if _REQUEST_ID.fullmatch(given) else secrets.token_hex(8)
    g.started = time.monotonic()


@bp.after_request
def log_request(response: Response) -> Response:
    if "request_id" not in g:  # refused by an app-wide check that runs before this blueprint's own
        start_request()
    response.headers["X-Request-ID"] = g.request_id
    log.info(
        "request",
        extra={
            "request_id": g.request_id,
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "duration": round(time.monotonic() - g.started, 4),
            "address": request.remote_addr,
        },
    )
    return response


@bp.before_request
def require_api_key() -> None:
    api_key = current_hub().config.api_key
    if not api_key:
        raise ProtocolError(
            "not_configured",
            "the HTTP API is off: set SWITCHBOARD_API_KEY and send it as 'Authorization: Bearer <key>'",
        )
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
        raise ProtocolError("unauthorized", "missing or wrong API key: send 'Authorization: Bearer <key>'")


@bp.post("/publish")
def publish():
    body = _body()
    if "channel" not in body or "data" not in body:
        raise ProtocolError("bad_request", 'body needs "channel" and "data"')
    idempotency_key = validate_idempotency_key(body.get("idempotency_key"))
    event = validate_event(body.get("event"))
    hub = current_hub()
    offset = hub.publish(body["channel"], body["data"], idempotency_key=idempotency_key, event=event, api=True)
    hub.counters["publishes_http"] += 1
    return _json({"channel": body["channel"], "offset": offset})


@bp.get("/channels")
def channels():
    counts = current_hub().channel_counts()
    return _json({"channels": [{"name": name, "subscribers": count} for name, count in sorted(counts.items())]})


@bp.get("/channels/<channel>/presence")
def presence(channel: str):
    return _json({"channel": channel, "members": current_hub().presence(channel)})


@bp.get("/channels/<channel>/history")
def history(channel: str):
    hub = current_hub()
    epoch, last, messages = hub.history(channel, since=_int_arg("since", 0), limit=_int_arg("limit", None))
    # Messages are kept as the JSON they were sent as; splice them in rather than re-encode.
    head = orjson.dumps({"channel": channel, "epoch": epoch, "offset": last})[:-1]
    return Response(head + b',"messages":[' + b",".join(messages) + b"]}", mimetype="application/json")


@bp.post("/tokens")
def tokens():
    """Mint a connection token, or with "channel", a subscription token for that one channel."""
    body = _body()
    user, ttl, channel = body.get("user"), body.get("ttl", 3600), body.get("channel")
    if not isinstance(user, str) or not user:
        raise ProtocolError("bad_request", '"user" must be a non-empty string')
    if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or ttl <= 0:
        raise ProtocolError("bad_request", '"ttl" must be a positive number of seconds')
    hub = current_hub()
    if channel is not None:
        validate_channel(channel)
        token, expires = hub.tokens.mint(user, ttl, channel=channel, publish=body.get("publish") is True)
    else:
        claims = {name: body.get(name) for name in ("info", "channels", "publish")}
        for name in ("channels", "publish"):
            value = claims[name]
            if (
                value is not None
                and value is not True
                and not (isinstance(value, list) and all(isinstance(v, str) for v in value))
            ):
                raise ProtocolError("bad_request", f'"{name}" must be a list of channel names or patterns')
        token, expires = hub.tokens.mint(user, ttl, **claims)
    return _json({"token": token, "user": user, "expires": expires})


@bp.get("/stats")
def stats():
    hub = current_hub()
    return _json({"connections": len(hub.connections), "channels": len(hub.channels), "counters": dict(hub.counters)})
