"""Starts a real reference upstream and a real gateway on 127.0.0.1 port 0 for end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
from google.api_core import operations_v1

from gateway.config import Settings, load_settings
from gateway.interceptors.outcome import MemorySink
from gateway.reference_upstream import ReferenceUpstream, start_reference_upstream
from gateway.server import Gateway, start_gateway
from tests.support.loop_thread import LoopThread


@dataclass
class Stack:
    """A running upstream + gateway pair, with sync channels to each."""

    loop: LoopThread
    upstream: ReferenceUpstream
    gateway: Gateway
    sink: MemorySink
    gateway_channel: grpc.Channel
    upstream_channel: grpc.Channel

    def via_gateway(self) -> operations_v1.OperationsClient:
        return operations_v1.OperationsClient(self.gateway_channel)

    def direct(self) -> operations_v1.OperationsClient:
        return operations_v1.OperationsClient(self.upstream_channel)


def gateway_settings(upstream_address: str) -> Settings:
    return load_settings(None, listen="127.0.0.1:0", upstream=upstream_address)


@contextmanager
def running_stack(loop: LoopThread, *, seed: bool = True) -> Iterator[Stack]:
    upstream = loop.run(start_reference_upstream("127.0.0.1:0", seed=seed))
    sink = MemorySink()
    gateway = loop.run(start_gateway(gateway_settings(upstream.address), sink=sink))
    gateway_channel = grpc.insecure_channel(gateway.address)
    upstream_channel = grpc.insecure_channel(upstream.address)
    try:
        yield Stack(loop, upstream, gateway, sink, gateway_channel, upstream_channel)
    finally:
        gateway_channel.close()
        upstream_channel.close()
        loop.run(gateway.stop(0))
        loop.run(upstream.stop(0))
