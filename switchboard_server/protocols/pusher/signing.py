"""Pusher's signatures, checked and made with hmac and hashlib: a few lines, not a library's job.

- Channel authorisation: an app's auth endpoint returns `auth = "<key>:<hex HMAC-SHA256(secret,
  "<socket_id>:<channel>[:<channel_data>]")>"`; a valid one grants that channel to that socket.
- HTTP API requests: `auth_signature` is HMAC-SHA256(secret, "METHOD\\nPATH\\nQUERY"), QUERY being
  every other parameter, keys lower-cased, sorted, `k=v` joined by `&`, unescaped; `body_md5` is the
  hex MD5 of the body; `auth_timestamp` must be within `TIMESTAMP_WINDOW` seconds of ours.
- Webhooks: `X-Pusher-Signature` is HMAC-SHA256(secret, body) in hex.
Every comparison is in constant time; a refusal names the text that should have been signed, as
Pusher's do, never the expected signature.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from switchboard_server.core.errors import ProtocolError
from switchboard_server.protocols.pusher.apps import App

TIMESTAMP_WINDOW = 600  # seconds, as Pusher


def sign(secret: str, text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def channel_auth_text(socket_id: str, channel: str, channel_data: str | None) -> str:
    """What an auth endpoint signs to let `socket_id` subscribe to `channel`."""
    return f"{socket_id}:{channel}" if channel_data is None else f"{socket_id}:{channel}:{channel_data}"


def channel_auth_valid(app: App, text: str, auth: object) -> bool:
    """Whether `auth` is `<key>:<signature of text>` for this app."""
    if not isinstance(auth, str):
        return False
    key, _, signature = auth.partition(":")
    valid_key = hmac.compare_digest(key.encode(), app.key.encode())
    return hmac.compare_digest(signature.encode(), sign(app.secret, text).encode()) and valid_key


def verify_request(app: App, method: str, path: str, params: Mapping[str, str], body: bytes, now: float) -> None:
    """Refuse (`unauthorized`, HTTP 401) an HTTP API request the app did not sign just now."""
    if not hmac.compare_digest(params.get("auth_key", "").encode(), app.key.encode()):
        raise ProtocolError("unauthorized", "Unknown auth_key: sign requests with the app's key")
    if params.get("auth_version") != "1.0":
        raise ProtocolError("unauthorized", "auth_version must be 1.0")
    timestamp = params.get("auth_timestamp", "")
    if not timestamp.isdigit():
        raise ProtocolError("unauthorized", "auth_timestamp must be the Unix time in seconds")
    if abs(now - int(timestamp)) > TIMESTAMP_WINDOW:
        raise ProtocolError(
            "unauthorized",
            f"Timestamp expired: given timestamp {timestamp} is not within {TIMESTAMP_WINDOW} s of server time "
            f"{int(now)}",
        )
    if body or "body_md5" in params:
        if not hmac.compare_digest(params.get("body_md5", "").encode(), hashlib.md5(body).hexdigest().encode()):
            raise ProtocolError("unauthorized", "body_md5 does not match the MD5 of the body")
    query = "&".join(
        f"{name}={value}"
        for name, value in sorted((name.lower(), value) for name, value in params.items() if name != "auth_signature")
    )
    text = f"{method}\n{path}\n{query}"
    if not hmac.compare_digest(params.get("auth_signature", "").encode(), sign(app.secret, text).encode()):
        raise ProtocolError("unauthorized", f"Invalid signature: expected the HMAC-SHA256 hex digest of {text!r}")
