"""An in-process world for the attacks: JWKS server, reference upstream, gateway, REST door.

The gateway is the real one (`start_gateway` on the example policy, file audit, JWKS over
HTTP); the REST/JSON door, when the tree has it, is started in front of the same chain with
`start_rest_door`. Calls are checked against the oracle and the upstream's call log.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config import load_settings
from gateway.reference_upstream import ReferenceUpstream
from gateway.reference_upstream.calls import CallRecord
from gateway.reference_upstream.seed import DONE_OPERATION
from gateway.server import Gateway, start_gateway
from gateway.testing.idp import LocalIdp, local_idp
from gateway.testing.loop import LoopThread
from gateway.testing.upstream import running_upstream
from hardening.doors import CLIENT_REFUSED, Answer, GrpcDoor, RestDoor
from hardening.env import Keys, Workdir, gateway_config, mint
from hardening.oracle import (
    ALLOW,
    GRPC_CODE,
    Expectation,
    Oracle,
    caller_of,
    method_path,
    table_cases,
    who_claims,
)

log = logging.getLogger("hardening")

IDENTITY_HEADER = "x-opsgate-principal"
ALICE = {"email": "alice@acme.example"}


@dataclass
class Violation:
    """Something the gateway did that it must never do (or a status the README does not give)."""

    kind: str  # wrongly_allowed | identity | status | unaudited | not_serving | ...
    door: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "door": self.door, "detail": self.detail[:600]}


@dataclass
class World:
    """A running in-process gateway with its upstream, JWKS endpoint and doors."""

    loop: LoopThread
    keys: Keys
    jwks: LocalIdp
    upstream: ReferenceUpstream
    gateway: Gateway
    audit_file: Path
    oracle: Oracle
    doors: dict[str, GrpcDoor | RestDoor]
    rest_note: str
    answered: list[str] = field(default_factory=list)  # request ids the gateway returned
    unanswered: int = 0  # calls sent that got no request id (may or may not have a record)
    calls: int = 0
    sent_tokens: set[str] = field(default_factory=set)  # every token presented, to find leaks
    _tokens: dict[str, str] = field(default_factory=dict)

    def token(self, claims: dict[str, Any]) -> str:
        """A valid token for these claims, minted once per distinct claim set."""
        key = repr(sorted(claims.items()))
        if key not in self._tokens:
            self._tokens[key] = mint(self.keys.primary, **claims)
            self.sent_tokens.add(self._tokens[key])
        return self._tokens[key]

    def upstream_calls(self) -> list[CallRecord]:
        return self.upstream.calls()

    def note(self, answer: Answer) -> Answer:
        self.calls += 1
        if answer.request_id is not None:
            self.answered.append(answer.request_id)
        elif answer.code != CLIENT_REFUSED:
            self.unanswered += 1
        return answer

    def flush_audit(self) -> bool:
        return bool(self.gateway.pipeline.audit.writer.flush(15))


@contextmanager
def running_world(workdir: Workdir, loop: LoopThread, *, with_rest: bool = True) -> Iterator[World]:
    keys = Keys()
    with ExitStack() as stack:
        jwks = stack.enter_context(local_idp(jwks=keys.published()))
        upstream = stack.enter_context(running_upstream(loop, seed=True))
        audit_file = workdir.path / "audit.log"
        config = gateway_config(
            workdir,
            upstream=upstream.address,
            jwks_url=jwks.jwks_url,
            policy=workdir.policy_copy(),
            audit_file=audit_file,
            audit_file_settings={"max_bytes": 2 * 1024 * 1024, "backups": 1000},
            rest=with_rest,
        )
        gateway = loop.run(start_gateway(load_settings(config)))
        stack.callback(lambda: loop.run(gateway.stop(1)))
        doors: dict[str, GrpcDoor | RestDoor] = {"grpc": GrpcDoor(gateway.address)}
        stack.callback(doors["grpc"].close)
        rest_note = "not tried"
        own_rest = getattr(gateway, "rest", None)
        if own_rest is not None:
            doors["rest"] = RestDoor(own_rest.address)
            rest_note = f"the gateway's own (config `rest: {{listen: ...}}`) on {own_rest.address}"
        elif with_rest:
            rest, rest_note = _start_rest(loop, gateway, upstream.address)
            if rest is not None:
                doors["rest"] = RestDoor(rest.address)
                # Stopped before the gateway (LIFO), as the door's own docstring asks.
                stack.callback(lambda: loop.run(rest.stop(1)))
        world = World(loop, keys, jwks, upstream, gateway, audit_file, Oracle(), doors, rest_note)
        _wait_ready(world)
        yield world


def _start_rest(loop: LoopThread, gateway: Gateway, target: str) -> tuple[Any, str]:
    """Start the REST/JSON door in front of this gateway's chain, if the tree has one."""
    try:
        from gateway.rest.server import start_rest_door
        from gateway.rest.settings import RestSettings
        from gateway.upstream.forwarder import UpstreamForwarder, UpstreamHeaders
    except Exception as exc:  # not there (yet), or half-written by its engineer
        return None, f"REST door not importable: {type(exc).__name__}: {exc}"
    headers = UpstreamHeaders(forward_authorization=False, identity_header=IDENTITY_HEADER)
    forwarder = UpstreamForwarder(gateway.channel, target, headers)
    try:
        door = loop.run(
            start_rest_door(
                RestSettings(listen="127.0.0.1:0"),
                gateway.pipeline.runner,
                forwarder,
                gateway.pipeline.profile,
            )
        )
    except Exception as exc:
        return None, f"REST door did not start: {type(exc).__name__}: {exc}"
    return door, f"started in process with start_rest_door on {door.address}"


def _wait_ready(world: World) -> None:
    grpc_door = world.doors["grpc"]
    assert isinstance(grpc_door, GrpcDoor)
    deadline = time.monotonic() + 15
    while not grpc_door.healthy():
        if time.monotonic() > deadline:
            raise RuntimeError("the in-process gateway never became ready")
        time.sleep(0.05)


# -- the checks every run ends with


def judge(
    world: World,
    door: str,
    claims: dict[str, Any] | None,
    expected: Expectation | None,
    answer: Answer,
    reached: list[CallRecord],
    *,
    strict_status: bool = True,
) -> list[Violation]:
    """Violations in one call: anything upstream that the oracle does not allow, a spoofed
    identity, an OK that is not allowed, and (strict_status) a status the oracle did not expect.

    `claims` are those of the caller's token, or None when the token must not authenticate.
    `expected` is the oracle's verdict on the call as sent, or None where only the upstream's
    call log can say what the call was (REST requests built from raw paths).
    `reached` are the upstream's call records this call produced.
    """
    found: list[Violation] = []
    for record in reached:
        if claims is None:
            found.append(
                Violation("wrongly_allowed", door, f"a refused token reached upstream: {record}")
            )
            continue
        verdict = world.oracle.decide(claims, method_path(record.method), record.name)
        if not verdict.allowed:
            found.append(
                Violation(
                    "wrongly_allowed",
                    door,
                    f"upstream got {record.method} {record.name!r} for {claims.get('email')}: "
                    f"oracle says {verdict.verdict} ({verdict.why})",
                )
            )
        identity = record.header(IDENTITY_HEADER)
        want = caller_of(claims).member
        # Percent-encoded to plain ASCII where the member is not (the KB-1 fix).
        if not isinstance(identity, str) or urllib.parse.unquote(identity) != want:
            found.append(
                Violation("identity", door, f"upstream saw identity {identity!r}, not {want!r}")
            )
    if answer.code == "OK":
        if claims is None or (expected is not None and not expected.allowed):
            found.append(
                Violation("wrongly_allowed", door, f"OK for a call the oracle refuses: {expected}")
            )
        elif not reached:
            found.append(Violation("status", door, "OK without the upstream being asked"))
    if strict_status and expected is not None:
        want_code = _wanted_code(expected, reached)
        if want_code is not None and answer.code != want_code:
            found.append(
                Violation(
                    "status",
                    door,
                    f"{answer.code} ({answer.reason}) where {want_code} was due: "
                    f"{expected.verdict} {expected.method} {expected.name!r:.120} ({expected.why})",
                )
            )
    return found


def _wanted_code(expected: Expectation, reached: list[CallRecord]) -> str | None:
    if expected.verdict == ALLOW:
        if len(reached) != 1:
            return "<exactly one upstream call>"
        outcome = reached[0].outcome
        return "OK" if outcome == "ok" else outcome
    return GRPC_CODE[expected.verdict]


def still_serving(world: World) -> list[Violation]:
    """The gateway answers health checks and a known-good call on every door."""
    found = []
    grpc_door = world.doors["grpc"]
    assert isinstance(grpc_door, GrpcDoor)
    if not grpc_door.healthy():
        found.append(Violation("not_serving", "grpc", "health check not SERVING"))
    token = world.token(ALICE)
    for name, door in world.doors.items():
        answer = world.note(door.operation("get", DONE_OPERATION, token))
        if answer.code != "OK":
            found.append(
                Violation(
                    "not_serving", name, f"known-good call got {answer.code} {answer.message}"
                )
            )
    return found


def replay_table(world: World, door_name: str) -> tuple[int, list[Violation]]:
    """Every case of the example policy's table, through one door: denied stays denied."""
    door = world.doors[door_name]
    found: list[Violation] = []
    cases = table_cases()
    for case_id, who, method, resource, expected in cases:
        claims = who_claims(who)
        token = world.token(who.claims())
        before = len(world.upstream_calls())
        answer = world.note(door.operation(method, resource, token))
        reached = world.upstream_calls()[before:]
        got = answer.code
        if door_name == "grpc" or expected in ("OK", "PERMISSION_DENIED"):
            ok = got == expected
        elif expected == "NOT_FOUND":
            ok = got == "NOT_FOUND" and answer.answered
        else:  # invalid names and unrouted methods: REST may refuse them before the chain
            ok = got != "OK" and not reached
        if not ok:
            found.append(
                Violation("table", door_name, f"{case_id}: expected {expected}, got {got}")
            )
        verdict = world.oracle.decide(claims, method_path(method), resource)
        found += judge(world, door_name, claims, verdict, answer, reached, strict_status=False)
    return len(cases), found
