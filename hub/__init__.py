"""Switchboard's engine: channels, presence, history and fan-out, with no Flask in sight."""

from hub.auth import ANONYMOUS, Identity, TokenAuthority
from hub.config import Config
from hub.errors import ProtocolError
from hub.hub import Hub

__all__ = ["ANONYMOUS", "Config", "Hub", "Identity", "ProtocolError", "TokenAuthority"]
