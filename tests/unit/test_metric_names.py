"""Every name the code counts under reaches a metric: a counter no metric takes would be counted
and never scraped. The names are read from the source itself, so a new `counters[...]` is checked
the day it is written; tests/integration/test_metrics.py scrapes the real figures."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from switchboard_server.core.config import Config
from switchboard_server.ops.metrics import LABELLED, SUMMED, UnknownCounter, metric_of
from switchboard_server.state import SwitchboardState

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [*sorted((ROOT / "switchboard_server").rglob("*.py")), *sorted((ROOT / "handlers").rglob("*.py"))]
# What stands for the variable part of a computed name (`"in_" + command.type`).
SAMPLE = "sample"


def _names(key: ast.expr, where: str) -> list[tuple[str, bool]]:
    """The names a subscript may count under, each with whether it ends in a computed part."""
    if isinstance(key, ast.Constant) and isinstance(key.value, str):
        return [(key.value, False)]
    if isinstance(key, ast.IfExp):
        return _names(key.body, where) + _names(key.orelse, where)
    if isinstance(key, ast.BinOp) and isinstance(key.op, ast.Add):
        return [(name + SAMPLE, True) for name, _computed in _names(key.left, where)]
    if isinstance(key, ast.JoinedStr) and isinstance(key.values[0], ast.Constant):
        return [(key.values[0].value + SAMPLE, True)]
    if isinstance(key, ast.JoinedStr):
        return [(SAMPLE, True)]  # no fixed prefix: fails below, as it should
    raise AssertionError(f"{where}: a counter name this test cannot read: {ast.unparse(key)}")


def counted_names() -> dict[str, tuple[str, bool]]:
    """Every `...counters[<name>]` in the server's code: name -> (where, computed)."""
    found = {}
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            target = node.value if isinstance(node, ast.Subscript) else None
            counters = isinstance(target, ast.Attribute) and target.attr in ("counters", "_counters")
            if counters or (isinstance(target, ast.Name) and target.id == "counters"):
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                for name, computed in _names(node.slice, where):
                    found[name] = (where, computed)
    return found


def test_every_name_the_code_counts_under_feeds_a_metric():
    names = counted_names()
    # The scan sees what it must (or it would pass on nothing).
    for known in ("webhooks_sent", "webhooks_dropped", "connections_closed", "in_" + SAMPLE, "close_" + SAMPLE):
        assert known in names, known
    for name, (where, computed) in names.items():
        try:
            metric, label = metric_of(name)
        except UnknownCounter:
            pytest.fail(f"{where}: counts {name!r}, which no metric takes")
        if computed:  # the computed part must be the label, not swallowed by a plain name
            assert label is not None and label.endswith(SAMPLE), (where, name, metric, label)


def test_a_name_no_metric_takes_is_logged_as_an_error_and_the_rest_still_count(caplog):
    state = SwitchboardState(Config(rate_messages=0))
    hub, recorder = state.hub, state.recorder
    hub.counters["made_up_name"] += 1
    hub.counters["webhooks_retried"] += 2
    hub.counters["connections_closed"] += 1
    hub.counters["close_1000"] += 1
    with caplog.at_level(logging.ERROR, logger="switchboard.metrics"):
        recorder.sync()
    assert [record.getMessage() for record in caplog.records] == [
        "hub counter 'made_up_name' feeds no metric: add it to a table in ops/metrics.py"
    ]
    scraped = generate_latest(recorder.registry()).decode()
    assert "switchboard_webhook_retries_total 2.0" in scraped
    # The total is the labelled metric's sum, not a second metric of the same name.
    assert 'switchboard_connections_closed_total{code="1000"} 1.0' in scraped
    assert "switchboard_connections_closed_total 1.0" not in scraped
    assert "made_up" not in scraped
    for prefix in LABELLED:
        with pytest.raises(UnknownCounter):
            metric_of(prefix)  # a prefix alone has no label to give
    assert set(SUMMED.values()) <= {metric for metric, _label, _help in LABELLED.values()}
