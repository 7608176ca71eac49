"""The loopback port the local server and the tests pick for Serve must stay out of the kernel's ephemeral
range: Ray's processes bind and connect there while they start, and could take it first."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from serving.local_ray import free_loopback_port

RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


@pytest.mark.skipif(not RANGE.exists(), reason="no /proc ephemeral port range on this system")
def test_the_port_is_free_and_below_the_ephemeral_range() -> None:
    low = int(RANGE.read_text().split()[0])
    ports = {free_loopback_port() for _ in range(20)}
    assert all(1024 <= p < low for p in ports), (sorted(ports), low)
    assert len(ports) > 1, "the same port every time: two servers started together would collide"
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # raises if the helper handed out a taken port


def test_a_taken_port_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    taken = held.getsockname()[1]
    try:
        # Only the taken port and one other are candidates: the helper must skip the taken one.
        order = iter([[taken, taken + 1]])
        monkeypatch.setattr("serving.local_ray.random.Random.sample", lambda self, seq, k: next(order))
        assert free_loopback_port() == taken + 1
    finally:
        held.close()
