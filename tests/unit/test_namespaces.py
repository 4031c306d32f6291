"""Namespaces as plain values: which prefix a channel takes, defaults, and the checks at start."""

from __future__ import annotations

import pytest

from switchboard_server.core.codecs import Publication
from switchboard_server.core.config import Config
from switchboard_server.core.conflation import latest_per_key
from switchboard_server.core.envelope import message_parts
from switchboard_server.core.namespaces import Namespace, Namespaces


def test_the_longest_matching_prefix_decides_and_the_global_settings_are_the_default():
    namespaces = Namespaces(
        Config(history_size=7, history_ttl=9.0),
        {"chat:": {"history_size": 3}, "chat:archive:": {"history_ttl": 60}, "ticker:": {"latest": True}},
    )
    assert namespaces.of("chat:lobby").history_size == 3
    archive = namespaces.of("chat:archive:2026")
    assert (archive.prefix, archive.history_size, archive.history_ttl) == ("chat:archive:", 7, 60.0)
    assert namespaces.of("ticker:eur").history_size == 1  # a latest-value namespace keeps one by default
    assert namespaces.of("elsewhere") == Namespace(history_size=7, history_ttl=9.0)


def test_a_later_declaration_merges_into_the_same_prefix():
    namespaces = Namespaces(Config(), {"t:": {"latest": True}})
    namespaces.declare("t:", {"conflate": True})
    assert (namespaces.of("t:x").latest, namespaces.of("t:x").conflate) == (True, True)


@pytest.mark.parametrize(
    ("prefix", "options", "message"),
    [
        ("chat:", {"size": 1}, "namespace 'chat:': unknown option 'size'"),
        ("chat:", {"history_size": -1}, "history_size must be a whole number, 0 or more, not -1"),
        ("chat:", {"presence": "no"}, "presence must be true or false, not 'no'"),
        ("chat:", {"history_ttl": 0}, "history_ttl must be a number of seconds above 0, not 0"),
        ("presence-x", {"presence": False}, "presence cannot be off"),
        ("t:", {"latest": True, "history_size": 0}, "latest needs history_size 1 or more"),
        ("bad prefix", {}, "a prefix is 1-128 characters"),
    ],
)
def test_a_wrong_option_is_refused_naming_it(prefix, options, message):
    with pytest.raises(ValueError, match=message):
        Namespaces(Config(), {prefix: options})


def publication(offset: int, data) -> Publication:
    head, tail = message_parts("t:x", data, None, None)
    return Publication("t:x", offset, head + b"%d" % offset + tail)


def test_the_latest_per_key_keeps_offset_order_and_shares_one_key_without_the_field():
    keyed = Namespace(conflate=True, conflation_key="symbol")
    messages = [publication(1, {"symbol": "A"}), publication(2, {"symbol": "B"}), publication(3, {"symbol": "A"})]
    messages.append(publication(4, "no field"))
    assert [p.offset for p in latest_per_key(messages, keyed)] == [2, 3, 4]
    assert [p.offset for p in latest_per_key(messages, Namespace(latest=True))] == [4]
