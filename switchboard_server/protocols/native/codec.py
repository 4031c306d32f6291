"""The native protocol's codec: a publication framed as the broker's payload itself.

The stored envelope is the native push, so the native protocol's fan-out is one WebSocket header
per message, whatever other protocols share the channel.
"""

from __future__ import annotations

from switchboard_server.core.channels import PRESENCE_PREFIX
from switchboard_server.core.codecs import Announcement, Publication
from switchboard_server.transport.frames import encode_frame


class NativeCodec:
    """Frames for native subscribers: the broker's JSON as it is, join/leave on presence- only.

    Members are tracked on every channel, but join/leave are pushed only on `presence-` channels
    (and those of a namespace that asks for them, `Announcement.pushed`): on a broadcast channel
    with N subscribers they would cost N^2 frames. Past the push limit
    they stop there too, and the presence notices that say so are framed like them.
    """

    notices = True

    def message_frame(self, publication: Publication) -> bytes:
        return encode_frame(publication.payload)

    def member_frame(self, announcement: Announcement) -> bytes | None:
        if not (announcement.pushed or announcement.channel.startswith(PRESENCE_PREFIX)):
            return None
        return encode_frame(announcement.payload)


NATIVE = NativeCodec()
