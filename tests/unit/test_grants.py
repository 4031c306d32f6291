"""The grants every connection starts with are shared, so nothing may change them."""

from __future__ import annotations

import pytest

from hub.access import NO_GRANTS
from hub.auth import ANONYMOUS


def test_the_shared_starting_grants_refuse_every_change():
    with pytest.raises(AttributeError):
        NO_GRANTS.add_channel("private-doc", True)
    with pytest.raises(AttributeError):
        NO_GRANTS.channels = {"private-doc": True}
    with pytest.raises(TypeError):
        NO_GRANTS.channels["private-doc"] = True  # type: ignore[index]
    with pytest.raises(AttributeError):
        NO_GRANTS.channels.pop("private-doc", None)  # type: ignore[attr-defined]
    assert not NO_GRANTS.may_subscribe("private-doc") and NO_GRANTS.may_subscribe("lobby")


def test_each_anonymous_connection_gets_grants_of_its_own():
    first, second = ANONYMOUS.grants(), ANONYMOUS.grants()
    first.add_channel("private-doc", False)
    assert first.may_subscribe("private-doc") and not second.may_subscribe("private-doc")
