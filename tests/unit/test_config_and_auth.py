"""Configuration from the environment, and tokens minted and verified."""

from __future__ import annotations

import pytest

from switchboard_server.core.auth import TokenAuthority
from switchboard_server.core.config import Config
from switchboard_server.core.errors import ProtocolError


def test_config_reads_prefixed_variables():
    config = Config.from_env(
        {
            "SWITCHBOARD_HISTORY_SIZE": "7",
            "SWITCHBOARD_ALLOWED_ORIGINS": "https://a.example, https://b.example",
            "OTHER": "x",
        }
    )
    assert config.history_size == 7
    assert config.allowed_origins == ("https://a.example", "https://b.example")
    assert config.max_message_size == Config().max_message_size


def test_config_rejects_bad_numbers_by_name():
    with pytest.raises(ValueError, match="SWITCHBOARD_SEND_QUEUE_BYTES"):
        Config.from_env({"SWITCHBOARD_SEND_QUEUE_BYTES": "lots"})


def test_tokens_round_trip_and_refuse_forgeries():
    authority = TokenAuthority("a-secret-long-enough-for-hs256-keys!")
    token, expires = authority.mint("alice", ttl=60, info={"role": "admin"})
    identity = authority.verify(token)
    assert (identity.user, identity.info) == ("alice", {"role": "admin"})
    with pytest.raises(ProtocolError) as forged:
        TokenAuthority("another-secret-long-enough-for-hs256").verify(token)
    assert forged.value.code == "unauthorized"
    with pytest.raises(ProtocolError) as expired:
        authority.verify(authority.mint("bob", ttl=-1)[0])
    assert expired.value.message == "token expired"


def test_tokens_need_a_secret():
    with pytest.raises(ProtocolError) as error:
        TokenAuthority("").mint("alice")
    assert error.value.code == "not_configured"
