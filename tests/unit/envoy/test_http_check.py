"""The HTTP check's own parts: answers as Envoy reads them, the headers Envoy adds, and running
a check at once when it need not wait."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from gateway.envoy.answers import Allow, Refuse
from gateway.envoy.http_check import _certificate, _peer, render, run_eagerly
from gateway.errors import StatusCode


def test_an_allowed_check_is_200_with_what_envoy_sets_and_keeps() -> None:
    answer = Allow(
        upstream_set=(("x-opsgate-principal", "user:a@b"),),
        upstream_removed=("authorization", "x-opsgate-principal-bin"),
        to_caller=(("x-request-id", "r1"),),
        join_key="r1.mac",
    )
    text = render(answer, keep_alive=True).decode()
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    assert "x-opsgate-principal: user:a@b" in lines
    assert "x-envoy-auth-headers-to-remove: authorization,x-opsgate-principal-bin" in lines
    assert "x-request-id: r1" in lines
    assert "x-opsgate-call-key: r1.mac" in lines
    assert "content-length: 0" in lines and "connection: close" not in lines
    assert body == ""


@pytest.mark.parametrize(("status", "sent"), [(200, 403), (401, 401), (429, 429)])
def test_a_refusal_is_never_200(status: int, sent: int) -> None:
    """200 means "allowed" to Envoy: a gRPC refusal (200 at the gRPC Check) goes as 403, and the
    gRPC client reads grpc-status; a REST refusal keeps its status."""
    answer = Refuse(StatusCode.PERMISSION_DENIED, status, (("grpc-status", "7"),), "{}")
    text = render(answer, keep_alive=False).decode()
    assert text.startswith(f"HTTP/1.1 {sent} ")
    assert "grpc-status: 7" in text and "connection: close" in text
    assert text.endswith("content-length: 2\r\nconnection: close\r\n\r\n{}")


@pytest.mark.parametrize(
    ("address", "peer"),
    [
        ("10.1.2.3:5555", "ipv4:10.1.2.3:5555"),
        ("[::1]:5555", "ipv6:[::1]:5555"),
        ("-", None),
        ("", None),
    ],
)
def test_envoys_downstream_address_is_spelled_as_grpc_spells_a_peer(
    address: str, peer: str | None
) -> None:
    assert _peer(address) == peer


def test_envoys_peer_certificate_is_the_unquoted_pem_or_nothing() -> None:
    assert _certificate("-") == b"" and _certificate("") == b""
    assert _certificate("-----BEGIN%20CERTIFICATE-----%0A") == b"-----BEGIN CERTIFICATE-----\n"


CURRENT: contextvars.ContextVar[str] = contextvars.ContextVar("current", default="none")


def test_a_check_that_need_not_wait_runs_at_once() -> None:
    async def scenario() -> tuple[object, list[str]]:
        seen: list[str] = []

        async def check() -> None:
            CURRENT.set("mine")
            seen.append(CURRENT.get())

        return run_eagerly(check()), seen

    pending, seen = asyncio.run(scenario())
    assert pending is None and seen == ["mine"]


def test_a_check_that_waits_is_resumed_in_a_context_of_its_own() -> None:
    async def scenario() -> list[str]:
        seen: list[str] = []
        gate = asyncio.get_running_loop().create_future()

        async def check() -> None:
            CURRENT.set("waiting")
            value = await gate
            await asyncio.sleep(0)
            seen.append(f"{CURRENT.get()}:{value}")

        pending = run_eagerly(check())
        assert pending is not None and not pending.done() and seen == []
        assert CURRENT.get() == "none"  # its context is not the caller's
        gate.set_result("opened")
        await pending
        return seen

    assert asyncio.run(scenario()) == ["waiting:opened"]
