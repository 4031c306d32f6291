"""Tokens: HS256 JWTs for connections (who you are, what you may do) and for single channels.

Connection token claims: `sub` (the user), `info` (shown in presence), `exp`, and optionally
`channels` (names or `*` patterns of private-/presence- channels it may subscribe to) and `publish`
(patterns it may publish on, or `true` for the same as `channels`). A subscription token grants one
channel to one user: claims `sub`, `channel`, `publish` (bool), `exp`. Minting is for trusted back
ends (the HTTP API); a token is a credential, and nothing here logs one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt

from switchboard_server.core.access import Grants
from switchboard_server.core.errors import ProtocolError


@dataclass(frozen=True)
class Identity:
    """Who a connection is (`user` None: anonymous), what it may do, and until when."""

    user: str | None = None
    info: Any = None
    channels: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    expires: float | None = None

    def grants(self) -> Grants:
        return Grants(self.channels, self.publish)


ANONYMOUS = Identity()


def _patterns(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ProtocolError("unauthorized", f'invalid token: "{name}" must be a list of channel names or patterns')
    return tuple(value)


class TokenAuthority:
    """Mints and verifies tokens with one shared secret."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def _require_secret(self) -> None:
        if not self._secret:
            raise ProtocolError("not_configured", "tokens are off: set SWITCHBOARD_TOKEN_SECRET to enable them")

    def mint(self, user: str, ttl: float = 3600, **claims: Any) -> tuple[str, int]:
        """A token for `user` with extra claims (info, channels, publish, channel), and its expiry."""
        self._require_secret()
        expires = int(time.time() + ttl)
        payload = {"sub": user, "exp": expires, **{k: v for k, v in claims.items() if v is not None}}
        return jwt.encode(payload, self._secret, algorithm="HS256"), expires

    def _decode(self, token: str) -> dict:
        if not self._secret:
            raise ProtocolError("unauthorized", "this server accepts no tokens (SWITCHBOARD_TOKEN_SECRET is not set)")
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], options={"require": ["sub"]})
        except jwt.ExpiredSignatureError:
            raise ProtocolError("unauthorized", "token expired") from None
        except jwt.InvalidTokenError as exc:
            raise ProtocolError("unauthorized", f"invalid token: {exc}") from None
        if not isinstance(claims["sub"], str) or not claims["sub"]:
            raise ProtocolError("unauthorized", 'invalid token: "sub" must be a non-empty string')
        return claims

    def verify(self, token: str) -> Identity:
        """The identity a connection token proves; `unauthorized` when forged, expired or malformed."""
        claims = self._decode(token)
        channels = _patterns(claims.get("channels"), "channels")
        publish = claims.get("publish")
        publish = channels if publish is True else _patterns(publish or None, "publish")
        return Identity(claims["sub"], claims.get("info"), channels, publish, claims.get("exp"))

    def verify_subscription(self, token: str, user: str, channel: str) -> bool:
        """Check a subscription token for `channel` held by `user`; returns whether it grants publishing."""
        claims = self._decode(token)
        if claims["sub"] != user or claims.get("channel") != channel:
            raise ProtocolError("forbidden", f"this subscription token is not for {user!r} on {channel!r}")
        return claims.get("publish") is True
