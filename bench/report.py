"""Turns the harness's raw results into results.json, results.md and PNG charts.

    python -m bench.report bench/results/results.json   # redraw the table and charts

What it must never do: measure anything, or hide a failure (an n/a cell keeps its reason).
Every figure is followed by its ratio to the `websockets` peer of the same run, value divided
by the reference value, whichever direction is better for that figure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REFERENCE = "websockets"
GEN_BUSY_PCT = 80  # above this the generator itself may be what limits a figure...
SERVER_BUSY_PCT = 90  # ...unless the server was saturated anyway


def client_bound(f: dict) -> bool:
    """The generator was busy and the server was not: the client may have set the pace."""
    server = f.get("server_cpu_pct")
    return (f.get("gen_cpu_pct") or 0) >= GEN_BUSY_PCT and (server is None or server < SERVER_BUSY_PCT)


# Per scenario: the columns of its table: (figure key, header, kind). The kind picks the format
# and says which direction is better ("+" higher, "-" lower, "" neither / a count).
COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "broadcast": [
        ("deliveries_per_s", "deliveries/s", "rate+"),
        ("p50_ms", "p50 ms", "ms-"),
        ("p99_ms", "p99 ms (median of broadcasts)", "ms-"),
        ("p99_overall_ms", "p99 ms (all)", "ms-"),
        ("server_cpu_us_per_delivery", "server µs/delivery", "us-"),
        ("gen_cpu_pct", "generator CPU", "pct"),
    ],
    "burst": [
        ("deliveries_per_s", "deliveries/s", "rate+"),
        ("server_cpu_us_per_delivery", "server µs/delivery", "us-"),
        ("deflate_accepted", "deflate accepted", "frac"),
        ("gen_cpu_pct", "generator CPU", "pct"),
    ],
    "channels": [
        ("deliveries_per_s", "deliveries/s", "rate+"),
        ("p50_ms", "p50 ms", "ms-"),
        ("p99_ms", "p99 ms", "ms-"),
        ("server_cpu_us_per_delivery", "server µs/delivery", "us-"),
        ("gen_cpu_pct", "generator CPU", "pct"),
    ],
    "echo": [
        ("rtt_p50_us", "RTT p50 µs", "us-"),
        ("rtt_p99_us", "RTT p99 µs", "us-"),
        ("server_cpu_us_per_rtt", "server µs/round trip", "us-"),
    ],
    "idle": [
        ("kib_per_conn_idle", "KiB/conn idle", "kib-"),
        ("kib_per_conn_after", "KiB/conn after broadcasts", "kib-"),
        ("kib_per_conn_growth", "growth KiB/conn", "kib"),
        ("deflate_accepted", "deflate accepted", "frac"),
    ],
    "connect": [
        ("connects_per_s", "handshakes/s", "rate+"),
        ("server_cpu_us_per_connect", "server µs/handshake", "us-"),
        ("gen_cpu_pct", "generator CPU", "pct"),
    ],
    "storm": [
        ("resubscribed_s", "all resubscribed, s", "s-"),
        ("recovered_s", "all recovered, s", "s-"),
        ("recovered_conns", "recovered", "count"),
        ("server_cpu_us_per_reconnect", "server µs/reconnect", "us-"),
        ("gen_cpu_pct", "generator CPU", "pct"),
    ],
    "fanout_cpu": [
        ("server_cpu_us_per_delivery", "server µs/delivery", "us-"),
        ("deliveries_per_s", "deliveries/s", "rate+"),
        ("server_cpu_pct", "server CPU", "pct"),
        ("gen_cpu_pct", "generator CPU", "pct"),
    ],
    "rpc": [
        ("rpc_p50_us", "RPC p50 µs", "us-"),
        ("rpc_p99_us", "RPC p99 µs", "us-"),
        ("publish_p50_us", "publish p50 µs", "us-"),
        ("publish_p99_us", "publish p99 µs", "us-"),
        ("server_cpu_us_per_rtt", "server µs/round trip", "us-"),
    ],
}
HEALTH = [("dropped", "dropped"), ("refused", "refused")]


def family(scenario: str) -> str:
    for prefix in ("broadcast", "burst", "channels", "echo", "idle", "connect", "fanout_cpu", "storm", "rpc"):
        if scenario.startswith(prefix):
            return prefix
    return ""


def fmt(value, kind: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if kind.startswith("rate"):
        if value >= 1e6:
            return f"{value / 1e6:.2f}M"
        if value >= 1e3:
            return f"{value / 1e3:.1f}k"
        return f"{value:.0f}"
    if kind == "pct":
        return f"{value:.0f}%"
    if kind == "count":
        return str(int(value))
    if kind == "frac":
        return f"{100 * value:.0f}%"
    if kind.startswith("kib"):
        return f"{value:.1f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cell(value, ref, kind: str, is_ref: bool) -> str:
    text = fmt(value, kind)
    if kind[-1:] in "+-" and isinstance(value, int | float) and isinstance(ref, int | float):
        if ref and not is_ref:
            text += f" ({value / ref:.2f}x)" if value / ref < 10 else f" ({value / ref:.1f}x)"
    return text


def deliveries_cell(f: dict) -> str:
    got, want = f.get("deliveries"), f.get("expected_deliveries")
    if got is None:
        got, want = f.get("round_trips"), f.get("expected_round_trips")
    if got is None:
        return "–"
    return f"{got}/{want}" + ("" if got == want else " ⚠")


def markdown(doc: dict) -> str:
    meta = doc["meta"]
    results = doc["results"]
    peers = list(results)
    lines = [
        "# Switchboard benchmark results",
        "",
        f"*{meta['date']}, {meta['mode']} run ({meta['repeat']} run(s) per scenario, median), "
        f"{meta['duration_s']} s. Machine: {meta['cpu']}, {meta['cpus']} CPUs, "
        f"{meta['memory_gib']} GiB, Linux {meta['kernel']}, Python {meta['python']}"
        + (f", Redis {meta['redis']}" if meta.get("redis") else "")
        + (f", commit {meta['commit']}" if meta.get("commit") else "")
        + ".*",
        "",
        f"Server pinned to CPU {meta['server_cpu']}, load generator (bench/loadgen.py) to CPU "
        f"{meta['client_cpu']}. In parentheses: the figure divided by the `{REFERENCE}` peer's "
        "in the same run (higher is better for rates, lower for latency, CPU and memory). "
        "`dropped`/`refused` count connections lost after, or failing, the handshake; both "
        "must be 0. `deliveries` is counted/expected.",
    ]
    if meta["mode"] == "quick":
        lines += ["", "**Quick run: tiny sizes, a smoke check only; the figures mean little.**"]
    for name, sc in doc["scenarios"].items():
        if not any(name in results[peer] for peer in peers):
            continue  # no peer of this run has it (a chat scenario in a run of pub/sub servers)
        cols = COLUMNS.get(family(name), [])
        params = ", ".join(f"{k}={v}" for k, v in sc["params"].items())
        lines += ["", f"## {name}", "", f"{sc['title']} ({params}).", ""]
        header = ["peer", *[h for _, h, _ in cols], "deliveries", *[h for _, h in HEALTH]]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] + ["--:"] * (len(header) - 1)) + "|")
        ref_entry = results.get(REFERENCE, {}).get(name, {})
        ref = ref_entry.get("figures", {}) if ref_entry.get("status") == "ok" else {}
        notes = []
        for peer in peers:
            entry = results[peer].get(name)
            if entry is None:
                continue
            if entry["status"] != "ok":
                row = [peer, f"n/a: {entry['reason'][:120]}"] + [""] * (len(header) - 2)
            else:
                f = entry["figures"]
                row = [peer]
                for key, _, kind in cols:
                    text = cell(f.get(key), ref.get(key), kind, peer == REFERENCE)
                    if key == "gen_cpu_pct" and client_bound(f):
                        text += " ⚠"
                        notes.append(
                            f"{peer}: the load generator used ≥ {GEN_BUSY_PCT}% of its core while "
                            f"the server used < {SERVER_BUSY_PCT}% of its own: this figure may be "
                            "bounded by the client, not the server."
                        )
                    row.append(text)
                row.append(deliveries_cell(f))
                for key, _ in HEALTH:
                    v = f.get(key)
                    row.append("–" if v is None else (str(v) if not v else f"**{v}** ⚠"))
                if f.get("errors"):
                    notes.append(f"{peer}: {f['errors']}")
                if entry.get("note"):
                    notes.append(f"{peer}: {entry['note']}")
            lines.append("| " + " | ".join(row) + " |")
        for note in notes:
            lines.append(f"\n*{note}*")
    lines += comparison_lines(doc)
    if "client_stream" in doc:
        lines += client_stream_lines(doc["client_stream"])
    if "conflation" in doc:
        lines += conflation_lines(doc["conflation"])
    charts = [p for p in CHARTS if any(results[peer].get(p[0], {}).get("status") == "ok" for peer in peers)]
    if charts:
        lines += ["", "## Charts", ""]
        for scenario, filename, _ in charts:
            lines.append(f"![{scenario}]({filename})")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def client_stream_lines(row: dict) -> list[str]:
    """The Python client's row (bench/client_stream.py): its stream read against websockets' raw."""
    lines = [
        "",
        "## client_stream",
        "",
        "One stream replayed to one reader pinned to CPU 1: `switchboard_client`'s sync client iterating a "
        "subscription, against the `websockets` sync client doing `recv()` + `json.loads` (the ratio is the "
        "median of each round's client/raw).",
        "",
    ]
    if row.get("status") != "ok":
        return [*lines, f"n/a: {row.get('reason', '')[:200]}"]
    lines += [
        "| reader | messages/s | CPU µs/message | messages × rounds |",
        "|---|--:|--:|--:|",
        f"| websockets, raw | {fmt(row['raw_per_s'], 'rate+')} | {row['raw_cpu_us']:.2f} | "
        f"{row['messages']:,} × {row['repeat']} |",
        f"| switchboard_client | {fmt(row['client_per_s'], 'rate+')} ({row['ratio']:.2f}x) | "
        f"{row['client_cpu_us']:.2f} | {row['messages']:,} × {row['repeat']} |",
    ]
    return lines


# Ratios between two peers of one run, with the target each is held to (issue 19): (scenario,
# figure key, what it is, the peer measured, the peers it is measured against, target).
COMPARISONS = [
    (
        "burst_chat_1k",
        "deliveries_per_s",
        "the chat, bursts to 1,000: deliveries/s",
        "switchboard-chat",
        ("flask-sock-chat", "flask-socketio-chat"),
        "≥ 10x",
    ),
    (
        "idle_chat",
        "kib_per_conn_idle",
        "the chat: KiB per idle member",
        "switchboard-chat",
        ("flask-sock-chat", "flask-socketio-chat"),
        "≤ 0.5x",
    ),
    (
        "echo",
        "rtt_p99_us",
        "flask-sock's echo example: round trip p99",
        "switchboard-sock-echo",
        ("flask-sock-echo",),
        "≤ 0.7x",
    ),
    (
        "idle_echo",
        "kib_per_conn_idle",
        "flask-sock's echo example: KiB per idle connection",
        "switchboard-sock-echo",
        ("flask-sock-echo",),
        "≤ 0.3x",
    ),
]


def comparison_lines(doc: dict) -> list[str]:
    """The COMPARISONS this run has both sides of: one table row each."""
    results = doc["results"]

    def figure(peer: str, scenario: str, key: str):
        entry = results.get(peer, {}).get(scenario, {})
        return entry.get("figures", {}).get(key) if entry.get("status") == "ok" else None

    rows = []
    for scenario, key, what, subject, others, target in COMPARISONS:
        mine = figure(subject, scenario, key)
        for other in others:
            theirs = figure(other, scenario, key)
            if isinstance(mine, int | float) and isinstance(theirs, int | float) and theirs:
                kind = next(k for name, _, k in COLUMNS[family(scenario)] if name == key)
                rows.append(
                    f"| {what} | {subject}: {fmt(mine, kind)} | {other}: {fmt(theirs, kind)} "
                    f"| {mine / theirs:.2f}x | {target} |"
                )
    if not rows:
        return []
    return [
        "",
        "## Between peers",
        "",
        "The figure of one peer divided by another's, in this run, and the target it is held to.",
        "",
        "| figure | peer | against | ratio | target |",
        "|---|--:|--:|--:|---|",
        *rows,
    ]


def conflation_lines(row: dict) -> list[str]:
    """The conflation row (bench/conflation.py): a ticker's fast subscribers alone and beside slow ones."""
    lines = [
        "",
        "## conflation",
        "",
        "A ticker on a conflated channel to fast subscribers (the load generator), alone and beside slow ones "
        "(tiny receive buffers, read 1 KiB every 100 ms): the fast ones' latency and the server's peak memory "
        "should not change, and no slow one is closed.",
        "",
    ]
    if row.get("status") != "ok":
        return [*lines, f"n/a: {row.get('reason', '')[:200]}"]
    lines += [
        "| run | fast | slow | messages/s | fast p50 ms | fast p99 ms | fast missing any | server RSS MiB | slow closed |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name in ("alone", "with_slow"):
        run = row[name]
        lines.append(
            f"| {name.replace('_', ' ')} | {run['fast']} | {run['slow']} | {row['rate']} | {run['p50_ms']} | "
            f"{run['p99_ms']} | {run['fast_missing']} | {run['server_rss_mib']} | {run.get('closed', '–')} |"
        )
    lines.append(f"\np99 with slow / alone: {row['p99_ratio']}x; server memory: {row['rss_ratio']}x.")
    return lines


# (scenario, file name, kind)
CHARTS = [
    ("broadcast_5k", "broadcast_5k_latency.png", "cdf"),
    ("burst_5k", "burst_5k_deliveries.png", "bar"),
    ("channels_10k", "channels_10k_deliveries.png", "bar"),
]


def charts(doc: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    written = []
    results = doc["results"]
    for scenario, filename, kind in CHARTS:
        ok = {p: r[scenario] for p, r in results.items() if r.get(scenario, {}).get("status") == "ok"}
        if not ok:
            continue
        fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
        if kind == "cdf":
            for peer, entry in ok.items():
                qs = entry["runs"][-1].get("_latency_quantiles_ms") or []
                if qs:
                    ys = [i / (len(qs) - 1) for i in range(len(qs))]
                    ax.plot(qs, ys, label=peer, linewidth=1.6)
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
            ax.set_xlabel("publish → delivery latency, ms (log)")
            ax.set_ylabel("fraction of deliveries")
            ax.set_ylim(0, 1.0)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
            n = doc["scenarios"][scenario]["params"].get("n")
            ax.set_title(f"{scenario}: latency distribution, {n} subscribers")
        else:
            names = list(ok)
            values = [ok[p]["figures"].get("deliveries_per_s") or 0 for p in names]
            colors = ["#d62728" if p == "switchboard" else "#1f77b4" for p in names]
            bars = ax.bar(names, values, color=colors)
            ax.set_yscale("log")
            top = max(values) or 1
            ax.set_ylim(max(1.0, min(v for v in values if v > 0) / 3 if any(values) else 1), top * 2)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt(v, "rate")))
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
            ax.set_ylabel("deliveries/s (log scale)")
            ax.set_title(f"{scenario}: deliveries per second")
            for bar, v in zip(bars, values, strict=True):
                ax.annotate(
                    fmt(v, "rate"),
                    (bar.get_x() + bar.get_width() / 2, v),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
            ax.tick_params(axis="x", labelrotation=20, labelsize=8)
            ax.grid(True, axis="y", which="both", alpha=0.3)
        fig.tight_layout()
        path = out / filename
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def write(doc: dict, out: Path) -> None:
    """results.json (raw), results.md and the charts, into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    charts(doc, out)
    (out / "results.md").write_text(markdown(doc))


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/results.json")
    write(json.loads(path.read_text()), path.parent)
    print((path.parent / "results.md").read_text())
