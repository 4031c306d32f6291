"""The benchmark harness and load generator still work: `--quick` runs against real peers.

Asserts only what must hold at any speed: every expected delivery arrived, no connection was
refused or dropped, every scenario produced figures, and the files were written. Nothing is
timed. The quick runs take 10-30 s each: the pub/sub servers through every scenario, and the
chat and echo apps and the RPC round trips through theirs.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import pytest

from bench import harness, loadgen
from bench.peers import registry
from bench.peers.registry import Peer

ROOT = Path(__file__).resolve().parents[2]
PEERS = ["websockets", "switchboard", "switchboard-graphql", "switchboard-pusher"]
# The chat written three ways (and flask-sock's moved by its import), flask-sock's echo example on
# flask-sock and on Switchboard, and the RPC round trips: their own scenarios only.
APP_PEERS = [
    "switchboard-chat",
    "flask-sock-chat",
    "switchboard-sock-chat",
    "flask-socketio-chat",
    "flask-sock-echo",
    "switchboard-sock-echo",
    "switchboard-hooked",
]
APP_SCENARIOS = ["burst_chat_1k", "idle_chat", "echo", "idle_echo", "rpc_rtt"]
OUTPUTS = [
    "results.json",
    "results.md",
    "broadcast_5k_latency.png",
    "burst_5k_deliveries.png",
    "channels_10k_deliveries.png",
]


def _quick(out: Path, *options: str) -> dict:
    cmd = [sys.executable, "-m", "bench.harness", "--quick", "--out", str(out), *options]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return out, _quick(out, "--peers", ",".join(PEERS))


@pytest.fixture(scope="module")
def quick_app_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-apps")
    return out, _quick(out, "--peers", ",".join(APP_PEERS), "--scenarios", ",".join(APP_SCENARIOS))


def _applicable(peer: str, scenarios) -> set[str]:
    return {name for name in scenarios if harness.SCENARIOS[name].applies_to(registry.PEERS[peer])}


def test_outputs_are_written(quick_run):
    out, doc = quick_run
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    md = (out / "results.md").read_text()
    for scenario in set().union(*(_applicable(peer, harness.SCENARIOS) for peer in PEERS)):
        assert f"## {scenario}" in md
    assert "## burst_chat_1k" not in md  # no peer of this run has it
    assert "| websockets |" in md
    assert doc["meta"]["mode"] == "quick"


def test_every_app_scenario_is_run_and_compared(quick_app_run):
    out, doc = quick_app_run
    md = (out / "results.md").read_text()
    for scenario in APP_SCENARIOS:
        assert f"## {scenario}" in md
    assert set(doc["results"]["switchboard-hooked"]) == {"echo", "rpc_rtt"}
    between = md.split("## Between peers", 1)[1]
    # each target of bench/report.py's COMPARISONS, with both sides measured in this run
    assert between.count("x | ≥ 10x |") == 2 and between.count("x | ≤ 0.5x |") == 2
    assert between.count("x | ≤ 0.7x |") == 1 and between.count("x | ≤ 0.3x |") == 1


@pytest.mark.parametrize("peer", PEERS)
def test_quick_numbers_are_sane(quick_run, peer):
    _check_figures(quick_run[1], peer, _applicable(peer, harness.SCENARIOS))


@pytest.mark.parametrize("peer", APP_PEERS)
def test_quick_app_numbers_are_sane(quick_app_run, peer):
    _check_figures(quick_app_run[1], peer, _applicable(peer, APP_SCENARIOS))


def _check_figures(doc: dict, peer: str, scenarios: set[str]) -> None:
    results = doc["results"][peer]
    assert set(results) == scenarios
    for name, entry in results.items():
        assert entry["status"] == "ok", f"{peer}/{name}: {entry.get('reason')}"
        f = entry["figures"]
        assert f["dropped"] == 0, f"{peer}/{name}: {f.get('errors')}"
        assert f["refused"] == 0, f"{peer}/{name}: {f.get('errors')}"
        if f.get("recovers") is False:  # a storm on a protocol without recovery loses what it missed
            assert f["deliveries"] == 0 < f["expected_deliveries"] and f["recovered_conns"] == 0
        elif "expected_deliveries" in f:
            assert f["deliveries"] == f["expected_deliveries"] > 0, f"{peer}/{name}: {f.get('errors')}"
            assert f.get("missing_conns", 0) == 0, f"{peer}/{name}"
        if "expected_round_trips" in f:
            assert f["round_trips"] == f["expected_round_trips"] > 0
        for key in ("deliveries_per_s", "p99_ms", "rtt_p50_us", "connects_per_s", "rpc_p99_us", "publish_p99_us"):
            if key in f:
                assert f[key] is not None and f[key] > 0, f"{peer}/{name}: {key}"
        if name.startswith("idle"):
            assert f["rss_idle_kib"] > 0 and f["kib_per_conn_idle"] is not None


def test_a_peer_that_cannot_start_is_na_and_the_run_goes_on(tmp_path, monkeypatch):
    broken = Peer("broken", [sys.executable, "-c", "import sys; sys.exit(3)"])

    monkeypatch.setitem(registry.PEERS, "broken", broken)
    args = Namespace(
        quick=True,
        repeat=1,
        start_timeout=5.0,
        out=str(tmp_path),
        server_cpu=None,
    )
    scenarios = [harness.SCENARIOS["echo"], harness.SCENARIOS["broadcast_5k"]]
    results = harness.run_peer("broken", scenarios, args, log=lambda msg: None)
    assert {e["status"] for e in results.values()} == {"n/a"}
    assert "exited with 3" in results["echo"]["reason"]


def _frame(payload: bytes, opcode: int = 1) -> bytes:
    """A server frame: unmasked, final."""
    if len(payload) < 126:
        return bytes((0x80 | opcode, len(payload))) + payload
    return bytes((0x80 | opcode, 126)) + len(payload).to_bytes(2, "big") + payload


def test_generator_counts_whole_split_and_mixed_frames():
    """The fast path (k*L bytes) and the slow path (pings, partial and odd frames) agree."""
    a, b = socket.socketpair()
    lg = loadgen.LoadGen(1, "json")
    try:
        a.setblocking(False)
        c = loadgen.Conn(a, loadgen.SUB, "c00000")
        c.state, c.t_ready, c.fast = loadgen.SUBSCRIBED, 1, True
        lg.track(c)
        lg.ep.register(c.fd, loadgen.EPOLLIN)

        def delivery(seq: int) -> bytes:
            data = b'{"t":%019d,"s":%010d,"p":"xx"}' % (time.time_ns(), 1_000_000_000 + seq)
            return _frame(b'{"type":"message","channel":"c00000","data":' + data + b"}")

        def settle(expected: int) -> None:
            deadline = time.monotonic() + 5
            while lg.delivered < expected and time.monotonic() < deadline:
                lg.poll(0.05)

        b.sendall(delivery(0))  # first one: slow path, learns L
        settle(1)
        b.sendall(delivery(1) + delivery(2) + delivery(3))  # fast path, k = 3
        settle(4)
        frame = delivery(4)
        b.sendall(frame[:7])  # split frame
        time.sleep(0.05)
        lg.poll(0.05)
        b.sendall(frame[7:] + _frame(b"ping", 9) + delivery(5))  # a ping in between
        settle(6)
        # 2L bytes that start with a delivery, contain the prefix twice, yet are not two
        # whole deliveries: delivery + 7-byte ping + L-7 bytes of the next delivery.
        nxt = delivery(7)
        b.sendall(delivery(6) + _frame(b"pong?", 9) + nxt[: len(nxt) - 7])
        time.sleep(0.05)
        lg.poll(0.05)
        assert lg.delivered == 7
        b.sendall(nxt[len(nxt) - 7 :] + _frame(b'{"type":"reply","id":1}'))
        settle(8)
        lg.poll(0.05)
        assert lg.delivered == 8 and c.got == 8
        assert len(lg.lat) == 8 and all(0 <= x < 5e9 for x in lg.lat)
        b.settimeout(2)
        pongs = b.recv(4096)
        assert pongs[0] == 0x8A and pongs.count(b"\x8a") == 2  # both pings answered
        assert lg.dropped == 0
    finally:
        lg.shutdown()
        b.close()


def test_generator_counts_chat_deliveries_in_an_envelope_that_grows():
    """Dialect "chat": the payload as a JSON string inside Switchboard's push is a delivery, on the
    slow path and then the fast one, also after the offset gains a digit; the welcome is not."""
    a, b = socket.socketpair()
    lg = loadgen.LoadGen(1, "chat", route="/rt/chat")
    try:
        a.setblocking(False)
        c = loadgen.Conn(a, loadgen.SUB, None)
        c.state, c.t_ready, c.fast = loadgen.SUBSCRIBED, 1, True
        lg.track(c)
        lg.ep.register(c.fd, loadgen.EPOLLIN)

        def push(offset: int) -> bytes:
            data = b'{\\"t\\":%019d,\\"s\\":1000000001,\\"p\\":\\"xx\\"}' % time.time_ns()
            return _frame(b'{"type":"message","channel":"chat","offset":%d,"data":"%s","from":"a1"}' % (offset, data))

        def settle(expected: int) -> None:
            deadline = time.monotonic() + 5
            while lg.delivered < expected and time.monotonic() < deadline:
                lg.poll(0.05)

        b.sendall(_frame(b'{"type":"welcome","client":"a1"}') + push(8))
        settle(1)
        b.sendall(push(9))  # the fast path, learnt from the first
        settle(2)
        b.sendall(push(10) + push(11))  # one byte longer: relearnt
        settle(4)
        lg.poll(0.05)
        assert lg.delivered == 4 and c.got == 4
        assert len(lg.lat) == 4 and all(0 <= x < 5e9 for x in lg.lat)
    finally:
        lg.shutdown()
        b.close()
