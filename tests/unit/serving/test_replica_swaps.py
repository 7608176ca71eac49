"""serving.direct_ingress.swap_replica_function: the one way labelwise swaps a function in Ray's replica
module (the rebinding HTTP server start, the loopback gRPC port), applied once however often it is called."""

from __future__ import annotations

import logging

import pytest
from ray.serve._private import replica as replica_module

from serving.direct_ingress import swap_replica_function


@pytest.fixture
def restore_grpc_port():
    original = replica_module.add_port_to_grpc_server
    yield original
    replica_module.add_port_to_grpc_server = original


def test_swaps_once_and_keeps_the_first_swap(restore_grpc_port) -> None:
    calls: list[str] = []

    def wrap(current):
        calls.append("wrapped")

        def replacement(server, address):
            return current(server, address)

        return replacement

    assert swap_replica_function("add_port_to_grpc_server", wrap, "_test_mark", "missing") is True
    first = replica_module.add_port_to_grpc_server
    assert first is not restore_grpc_port and first._test_mark is True
    # A second call (the module imported again in the same replica) keeps the first swap, unwrapped.
    assert swap_replica_function("add_port_to_grpc_server", wrap, "_test_mark", "missing") is True
    assert replica_module.add_port_to_grpc_server is first
    assert calls == ["wrapped"]


def test_a_ray_without_the_function_is_left_alone_with_a_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="labelwise.serving"):
        swapped = swap_replica_function("no_such_function_here", lambda f: f, "_test_mark", "no such thing")
    assert swapped is False
    assert not hasattr(replica_module, "no_such_function_here")
    assert "no such thing" in caplog.text
