"""Calls as a door hands them to the pipeline, for tests of the stages and of what reads a Call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.call import Call, Metadata, new_call


@dataclass
class FixedTransport:
    """A Transport whose peer, certificate, deadline and cancellation a test sets by hand."""

    address: str | None = "ipv4:127.0.0.1:5555"
    certificate: Mapping[str, Sequence[bytes]] = field(default_factory=dict)
    remaining: float | None = None
    gone: bool = False

    def peer(self) -> str | None:
        return self.address

    def auth_context(self) -> Mapping[str, Sequence[bytes]]:
        return self.certificate

    def time_remaining(self) -> float | None:
        return self.remaining

    def cancelled(self) -> bool:
        return self.gone


def a_call(method: str, metadata: Metadata = (), payload: Any = None, **transport: Any) -> Call:
    """The Call a door would build for `method` with this metadata, over a FixedTransport."""
    return new_call(method, metadata, FixedTransport(**transport), payload)
