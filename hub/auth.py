"""Connection tokens: HS256 JWTs whose `sub` is the user and `info` is shown in presence.

Minting is for trusted back ends (the HTTP API); verifying happens once per handshake. A token is
a credential: nothing here logs it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt

from hub.errors import ProtocolError


@dataclass(frozen=True)
class Identity:
    """Who a connection is: `user` is None for an anonymous connection."""

    user: str | None = None
    info: Any = None


ANONYMOUS = Identity()


class TokenAuthority:
    """Mints and verifies connection tokens with one shared secret."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def _require_secret(self) -> None:
        if not self._secret:
            raise ProtocolError("not_configured", "tokens are off: set SWITCHBOARD_TOKEN_SECRET to enable them")

    def mint(self, user: str, info: Any = None, ttl: float = 3600) -> tuple[str, int]:
        """A token for `user`, and the Unix time it expires."""
        self._require_secret()
        expires = int(time.time() + ttl)
        claims = {"sub": user, "exp": expires}
        if info is not None:
            claims["info"] = info
        return jwt.encode(claims, self._secret, algorithm="HS256"), expires

    def verify(self, token: str) -> Identity:
        """The identity a token proves; `unauthorized` when it is forged, expired or malformed."""
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
        return Identity(user=claims["sub"], info=claims.get("info"))
