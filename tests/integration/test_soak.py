"""A short soak (bench/soak.py): steady subscribers, churn and a publisher against a real server.

About 15 s, with each broker: 300 subscribers stay while connections come and go (over a thousand
on an idle machine), and 20 messages a second are published; every subscriber must get every message once, and the worker must end with
the descriptors it started with. The long run is in the README.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.soak import Run, Steady, tally
from tests.integration.servers import ROOT, RedisServer

STEADY = 300


@pytest.mark.parametrize("broker", ["local", "redis"])
def test_a_short_soak_loses_nothing_duplicates_nothing_and_leaks_nothing(tmp_path, broker):
    results = tmp_path / "soak.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    redis = RedisServer(tmp_path) if broker == "redis" else None
    if redis is not None:
        env.update({"SWITCHBOARD_REDIS_URL": redis.url, "SWITCHBOARD_WORKERS": "2"})
    try:
        soak = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.soak",
                "--seconds",
                "12",
                "--connections",
                str(STEADY),
                "--json",
                str(results),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        if redis is not None:
            redis.stop()
    assert soak.returncode == 0, soak.stdout + soak.stderr
    found = json.loads(results.read_text())

    published = found["messages"]["published"]
    assert published >= 100 and found["messages"]["acknowledged"] == published
    steady = found["steady"]
    assert steady["connected_to_the_end"] == STEADY
    assert (steady["missed"], steady["duplicated"], steady["unexpected"]) == (0, 0, 0)
    assert steady["deliveries"] == STEADY * published
    assert steady["close_codes_at_the_end"] == {"1000": STEADY}

    churn = found["connections"]["churn"]
    # Churn happened; how much a loaded machine manages in 12 s is the benchmarks' business.
    assert churn["opened"] >= STEADY, churn
    assert churn["close_codes"] == {"1000": churn["closed_cleanly"]} and churn["dropped_without_close"] > 0
    assert churn["errors"] == {}

    fds = found["fds"]
    assert fds["workers"] and fds["workers_at_the_end"] == fds["workers"]
    assert all(excess <= fds["tolerance"] for excess in fds["excess"].values()), fds
    assert found["memory_kb"]["server_tree_start"] > 0
    assert found["server"]["unhealthy_answers"] == {} and found["server"]["channels_left"] == {}
    if broker == "local":  # /api/stats is one worker's; with two, each saw only its share
        assert found["server"]["stats"]["counters"]["connections_opened"] == found["connections"]["opened_total"]
    assert found["server_exit"] == 0


def test_the_tally_counts_a_missed_and_a_duplicated_message():
    complete, gappy = Steady(), Steady()
    for seq in range(10):
        complete.record(seq)
    for seq in (0, 1, 2, 4, 5, 5, 6, 7, 8, 9):
        gappy.record(seq)
    run = Run("ws://unused", "soak", [complete, gappy], acked=set(range(10)), final_seq=9)

    found = tally(run)
    assert (found["missed"], found["duplicated"], found["unexpected"]) == (1, 1, 0)
    assert (found["subscribers_missing_messages"], found["subscribers_with_duplicates"]) == (1, 1)
