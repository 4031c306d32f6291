"""The Python client's benchmark row still runs: a tiny stream, both readers, counted, no timing asserted.

Each reader checks every message's number itself and fails on a gap, a repeat or a short count;
here the run must finish with figures for both, and the report must show them.
"""

from __future__ import annotations

import pytest

from bench import client_stream, report
from tests.integration.servers import free_port


def test_a_tiny_stream_is_read_whole_by_both_readers_and_reported():
    figures = client_stream.measure(count=2000, repeat=2, log=lambda line: None)
    assert figures["messages"] == 2000 and figures["repeat"] == 2
    assert all(len(runs) == 2 and all(rate > 0 for rate in runs) for runs in figures["runs"].values())
    assert figures["raw_per_s"] > 0 and figures["client_per_s"] > 0 and figures["ratio"] > 0
    lines = "\n".join(report.client_stream_lines({"status": "ok", **figures}))
    assert "| switchboard_client |" in lines and f"({figures['ratio']:.2f}x)" in lines


def test_a_reader_that_fails_says_why_and_the_report_shows_it():
    with pytest.raises(RuntimeError, match="the raw reader failed") as failed:
        client_stream.run_reader("raw", f"ws://127.0.0.1:{free_port()}/ws", 10)  # nothing listens there
    row = {"status": "n/a", "reason": str(failed.value)}
    assert "n/a: the raw reader failed" in "\n".join(report.client_stream_lines(row))
