"""The chat's real time: Switchboard under /rt, and the app's own code on its events (docs/hooks.md).

A room `lobby` is the channel `presence-lobby`: its messages, and who is in it (join and leave).
Who is typing is a sync route of its own (`/rt/ws/typing/<room>`): a plain function with a loop,
passing each page's notices on through `typing-<room>`, never stored. The hooks and the route
run in the connection's greenlet inside the app's context, so they read Flask's session and the
database directly; a slow query makes only that connection wait.
"""

from __future__ import annotations

import re
import time

from flask import session

from switchboard_server import Refuse, Switchboard
from switchboard_server.core.hooks import Client, Connect, Publish

from .models import Message, db

sb = Switchboard(url_prefix="/rt")

ROOM = re.compile(r"[A-Za-z0-9_-]{1,40}")
MAX_TEXT = 500


@sb.on_connect
def who(connect: Connect) -> dict:
    """The user logged in with the page's session cookie; may read and write every room."""
    name = session.get("user")
    if not name:
        raise Refuse("log in first")
    return {"user": name, "info": {"name": name}, "channels": ["presence-*"], "publish": ["presence-*"]}


@sb.on_publish
def keep(publish: Publish) -> None:
    """A message is checked, trimmed and stored before anyone hears it."""
    kind, _, room = publish.channel.partition("-")
    if kind != "presence" or not ROOM.fullmatch(room):
        raise Refuse("this chat publishes in rooms only (presence-<room>)")
    message = Message(room=room, user=publish.client.user, text=checked_text(publish.data))
    db.session.add(message)
    db.session.commit()
    publish.data = message.as_dict()  # subscribers get the stored message, with its id


def checked_text(data: object) -> str:
    """The message's text, trimmed; refused when it is missing, empty or too long."""
    text = data.get("text") if isinstance(data, dict) else None
    if not isinstance(text, str):
        raise Refuse('a message is {"text": "..."}', code="bad_request")
    text = text.strip()
    if not text:
        raise Refuse("empty message: type something first", code="bad_request")
    if len(text) > MAX_TEXT:
        raise Refuse(f"too long: {len(text)} characters, {MAX_TEXT} at most", code="bad_request")
    return text


TYPING_EVERY = 1.0  # seconds: at most one notice per typist, however fast the page sends


@sb.route("/ws/typing/<room>")
def typing(ws, room: str) -> None:
    """Who is typing in a room: the page sends anything while its user types, and everyone on the
    room's typing channel (this socket included) hears `{"typing": true}` from that user, at most
    once a second. The user is the connect hook's; a route publishes as the app, so the publish
    hook does not see these notices, and clients cannot publish on typing- channels themselves."""
    if not ROOM.fullmatch(room):
        ws.close(1008, "no such room")
        return
    channel = f"typing-{room}"
    ws.subscribe(channel)
    last = 0.0
    for _ in ws:
        now = time.monotonic()
        if now - last >= TYPING_EVERY:
            last = now
            ws.publish(channel, {"typing": True})


@sb.rpc("older")
def older(client: Client, params: object) -> dict:
    """`{"room", "before"}`: up to 50 messages of the room before id `before` (the newest when
    null), newest last, and whether there are older ones still."""
    room = params.get("room") if isinstance(params, dict) else None
    before = params.get("before") if isinstance(params, dict) else None
    if not isinstance(room, str) or not ROOM.fullmatch(room):
        raise Refuse("older needs a room: letters, digits, _ and -, 40 at most", code="bad_request")
    if before is not None and (not isinstance(before, int) or isinstance(before, bool)):
        raise Refuse('"before" is a message id, or null for the newest', code="bad_request")
    messages, more = Message.page_before(room, before)
    return {"messages": [message.as_dict() for message in messages], "more": more}
