"""bench/memory.py still measures: every part of an idle connection is there and they add up."""

from __future__ import annotations

from bench import memory


def test_the_parts_of_an_idle_connection_add_up():
    parts = memory.breakdown(3000)  # smaller counts drown in the allocator's reuse of freed memory
    named = (
        "socket_and_watcher_kib",
        "greenlet_and_saved_c_stack_kib",
        "greenlet_python_frames_kib",
        "hub_records_kib",
    )
    assert all(parts[name] > 0 for name in named), parts
    assert abs(sum(parts[name] for name in named) - parts["total_kib"]) < 0.05
    # The hub's records are traced to the hub's own modules.
    assert any(name.split("/")[0] in ("core", "transport") for name in parts["traced_bytes_by_file"])
