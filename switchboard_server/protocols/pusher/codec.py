"""The Pusher protocol's codec: each publication and presence change framed once per app.

The hub asks it once per message on a channel with Pusher subscribers (core/codecs.py), and every
Pusher subscriber of the app gets the same bytes. The events themselves are events.py's.
"""

from __future__ import annotations

from switchboard_server.core.codecs import Announcement, Publication
from switchboard_server.protocols.pusher.apps import App
from switchboard_server.protocols.pusher.events import DEFAULT_EVENT, PRESENCE, frame


class PusherCodec:
    """Frames for one app's Pusher subscribers: each publication and presence change, once.

    One per app, since the frame names the channel as that app knows it.
    """

    def __init__(self, app: App) -> None:
        self.app = app

    def message_frame(self, publication: Publication) -> bytes:
        message = publication.message()
        channel = self.app.pusher_channel(publication.channel)
        event = message.get("event") or DEFAULT_EVENT
        extra = {}
        sender = message.get("from")
        if sender is not None and event.startswith("client-") and channel.startswith(PRESENCE):
            extra["user_id"] = sender
        return frame(event, message["data"], channel, **extra)

    def member_frame(self, announcement: Announcement) -> bytes | None:
        channel = self.app.pusher_channel(announcement.channel)
        if not channel.startswith(PRESENCE):
            return None
        message = announcement.message()
        member = message["member"]
        if message["type"] == "join":
            return frame(
                "pusher_internal:member_added", {"user_id": member["user"], "user_info": member["info"]}, channel
            )
        return frame("pusher_internal:member_removed", {"user_id": member["user"]}, channel)
