"""GraphQL under random input (Hypothesis): messages, documents and variables never crash a
session; every answer is a protocol close code or an `error`/`next` for the operation."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchboard_server.transport.frames import FrameError
from tests.unit.test_graphql import MESSAGES, Side, messages

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=15,
)
QUERIES = [MESSAGES, '{ history(channel: "a") { offset messages { data } } }', "mutation { publish }", "{ channels"]
payloads = st.fixed_dictionaries(
    {},
    optional={
        "query": st.sampled_from(QUERIES) | st.text(max_size=60) | json_values,
        "operationName": st.none() | st.text(max_size=8) | json_values,
        "variables": st.dictionaries(st.sampled_from(["c", "s", "e", "x"]), json_values, max_size=4) | json_values,
    },
)
client_messages = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["connection_init", "ping", "pong", "subscribe", "complete"]) | st.text(max_size=10),
        "id": st.text(max_size=140) | json_values,
        "payload": payloads | json_values,
    },
)
CLOSE_CODES = {4400, 4401, 4409, 4429}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans(), st.lists(client_messages | st.binary(max_size=40), min_size=1, max_size=6))
def test_random_messages_end_in_a_close_code_or_an_answer(acknowledged, sequence):
    side = Side()
    conn, client = side.connect(init=acknowledged)
    for message in sequence:
        raw = message if isinstance(message, bytes) else json.dumps(message).encode()
        try:
            conn.session.on_message(conn, 1, raw)
        except FrameError as error:  # not UTF-8: the connection fails with 1007
            assert error.code == 1007
            return
        if conn.closing:
            assert conn.close_code in CLOSE_CODES
            return
    for answer in messages(client):
        assert answer["type"] in ("connection_ack", "pong", "next", "error", "complete"), answer
        if answer["type"] == "error":
            assert answer["payload"] and all(error["message"] for error in answer["payload"])
