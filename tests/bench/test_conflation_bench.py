"""bench/conflation.py still runs: a tiny ticker to fast subscribers, alone and beside slow ones.

Asserts only what must hold at any speed: every fast subscriber got every message, no slow one was
closed, and the report shows the row. Nothing is timed."""

from __future__ import annotations

from bench import conflation, report


def test_a_tiny_run_reports_both_runs_with_every_fast_delivery_and_no_slow_reader_closed():
    figures = conflation.measure(fast=20, slow=5, rate=100, seconds=1.0, log=lambda _line: None)
    for run in (figures["alone"], figures["with_slow"]):
        assert run["published"] == 100
        assert run["fast_missing"] == 0
        assert run["server_rss_mib"] > 0
    assert figures["with_slow"]["closed"] == 0
    lines = "\n".join(report.conflation_lines({"status": "ok", **figures}))
    assert "## conflation" in lines and "| with slow | 20 | 5 | 100 |" in lines
