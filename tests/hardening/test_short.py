"""The hardening suite's short mode, part by part: what the gateway must survive.

One run of the suite's building blocks (attacks on every door, the faults against real
processes, a short soak) is shared by the tests below, which assert behaviour only: nothing
lost from the audit trail, nothing allowed that the policy denies, no unhandled exception,
the gateway still serving. Each bug the suite found (KB-1 to KB-6, see hardening/bugs.py) keeps
a regression test here.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_settings
from gateway.reference_upstream.seed import DONE_OPERATION, STAGING_OPERATION
from gateway.server import start_gateway
from gateway.testing.loop import LoopThread
from hardening.doors import GrpcDoor
from hardening.env import Workdir, mint, replace_file, wait_until
from hardening.ledger import capturing_logs
from hardening.oracle import Oracle, self_check
from hardening.report import write
from hardening.suite import Parts, Plan, run_suite
from hardening.world import World, running_world

pytestmark = pytest.mark.timeout(420)

# The short plan, smaller still: the same attacks and faults, fewer cases, a 10 s soak.
PLAN = dataclasses.replace(
    Plan.short(),
    bodies=60,
    names=60,
    metadata=40,
    tokens=100,
    h2=20,
    soak_seconds=10,
    soak_rate=100,
)


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    parts = Parts(issue15=False, known_bugs=False, atheris=False)  # test_issue15.py runs it
    return run_suite(PLAN, seed=20261125, parts=parts)


def test_the_oracle_agrees_with_the_policy_table() -> None:
    assert self_check(Oracle()) == []


def test_no_audit_record_is_lost_or_doubled(results: dict[str, Any]) -> None:
    for part in ("attacks", "faults", "soak"):
        audit = results[part]["audit"]
        assert audit["lost"] == 0, (part, audit)
        assert audit["duplicated"] == 0, (part, audit)
        assert audit["unexplained"] == 0, (part, audit)
        assert audit["records"] > 0, (part, audit)
    # Every call the soak made reached the chain: one record each, exactly.
    assert results["soak"]["audit"]["records"] == results["soak"]["calls"] + 1  # + known-good


def test_nothing_is_allowed_that_the_policy_denies(results: dict[str, Any]) -> None:
    totals = results["totals"]
    assert totals["wrongly_allowed"] == 0
    assert totals["identity_spoofed"] == 0
    for run in results["attacks"]["runs"]:
        assert run["violations"].get("wrongly_allowed", 0) == 0, run["violation_examples"]
    assert results["faults"]["table_after_faults"] == []


def test_no_unhandled_exception_and_no_token_in_the_logs(results: dict[str, Any]) -> None:
    assert results["attacks"]["unhandled_exceptions"] == []
    assert results["faults"]["unhandled_exceptions"] == []
    assert results["soak"]["unhandled_exceptions"] == []
    assert results["attacks"]["token_leaks"] == []


def test_the_gateway_is_still_serving_after_everything(results: dict[str, Any]) -> None:
    assert results["attacks"]["still_serving"]
    assert results["attacks"]["end_checks"] == []  # the table replayed on every door
    assert results["faults"]["still_serving"]
    assert results["faults"]["gateway_exit_code"] == 0  # and it drained cleanly on SIGTERM
    assert results["soak"]["still_serving"]


def test_every_door_was_attacked(results: dict[str, Any]) -> None:
    doors = results["attacks"]["doors"]
    assert "grpc" in doors
    attacked = {(run["attack"], run["door"]) for run in results["attacks"]["runs"] if run["cases"]}
    for door in doors:
        for attack in ("request-bodies", "resource-names", "metadata", "tokens"):
            assert (attack, door) in attacked


def test_every_fault_is_survived(results: dict[str, Any]) -> None:
    faults = results["faults"]["results"]
    assert len(faults) >= 10
    for fault in faults:
        assert fault["survived"], fault
        assert fault["recovered"], fault


def test_the_soak_has_no_errors(results: dict[str, Any]) -> None:
    soak = results["soak"]
    assert soak["errors"] == 0, soak["examples"]
    assert soak["wrongly_allowed"] == 0
    # Memory levels off while distinct tokens keep arriving (caches are small in the soak).
    assert soak["distinct_tokens"] > 2 * soak["token_cache_size"]
    assert soak["rss"]["second_half_growth_kib"] < 32 * 1024


def test_the_report_is_written(results: dict[str, Any], tmp_path: Path) -> None:
    md, js = write(results, tmp_path)
    assert json.loads(js.read_text())["totals"]["records_lost"] == 0
    text = md.read_text()
    assert "| **audit records lost** | **0** |" in text
    assert "| **calls allowed that the policy denies** | **0** |" in text


# -- the bugs this suite found: regression tests -------------------------------------------


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    loop = LoopThread()
    try:
        with running_world(Workdir(tmp_path), loop) as running:
            yield running
    finally:
        loop.close()


# Regression test for KB-1 (found by this suite, fixed in da90600).
def test_a_non_ascii_principal_the_policy_allows_is_forwarded(world: World) -> None:
    token = mint(world.keys.primary, email="zoë@acme.example", hd="acme.example")
    with capturing_logs() as logs:
        answers = [door.operation("get", STAGING_OPERATION, token) for door in world.doors.values()]
    assert logs.unhandled == []
    assert [a.code for a in answers] == ["OK"] * len(answers)


# Regression test for KB-2 (found by this suite, fixed in da90600).
def test_hot_reload_survives_a_policy_with_an_impossible_date(tmp_path: Path) -> None:
    loop = LoopThread()
    try:
        with running_world(Workdir(tmp_path), loop, with_rest=False) as world:
            policy = tmp_path / "policy.yaml"
            settings = load_settings(tmp_path / "opsgate.yaml")
            settings = dataclasses.replace(
                settings,
                authorization=dataclasses.replace(
                    settings.authorization, policy_file=policy, reload_interval_s=0.05
                ),
            )
            gateway = loop.run(start_gateway(settings))
            door = GrpcDoor(gateway.address)
            token = world.token({"email": "alice@acme.example"})
            try:
                original = policy.read_text()
                replace_file(policy, "description: 2024-02-30\n" + original)
                time.sleep(0.3)
                replace_file(policy, "{}\n")  # valid: denies everything
                denied = wait_until(
                    lambda: (
                        door.operation("get", DONE_OPERATION, token).code == "PERMISSION_DENIED"
                    ),
                    3.0,
                )
                for task in gateway.background:
                    if task.done() and not task.cancelled():
                        task.exception()  # retrieved, so asyncio does not report it later
            finally:
                door.close()
                loop.run(gateway.stop(0))
            assert denied
    finally:
        loop.close()


# Regression test for KB-3 (found by this suite, fixed in da90600).
def test_a_malformed_authorization_header_is_not_logged(world: World) -> None:
    from hardening.tokens import sign_raw

    rest = world.doors.get("rest")
    if rest is None:
        pytest.skip("no REST door in this tree")
    body = json.dumps({"iss": "https://idp.hardening.test", "email": "alice@acme.example"})
    header = {"alg": "RS256", "kid": world.keys.primary.kid}
    token = sign_raw(world.keys.primary, header, body.encode(), "RS256")  # not session-tracked
    stray = token[:40] + "\x0b" + token[40:]
    over_long = "ya29.NOT-A-REAL-TOKEN-" + "s" * 70_000
    with capturing_logs() as logs:
        answers = [rest.operation("get", STAGING_OPERATION, t) for t in (stray, over_long)]
        time.sleep(0.2)
    assert [a.http_status for a in answers] == [400, 400]
    secrets = (token.split(".")[1][:24], "NOT-A-REAL-TOKEN")
    logged = [line.message + line.traceback for line in logs.lines]
    assert not [text for text in logged if any(s in text for s in secrets)]


# Regression test for KB-4 (found by this suite, fixed in da90600).
def test_a_token_in_the_path_never_reaches_the_audit_trail(world: World) -> None:
    from hardening.ledger import read_audit
    from hardening.tokens import sign_raw

    body = json.dumps({"iss": "https://idp.hardening.test", "email": "alice@acme.example"})
    header = {"alg": "RS256", "kid": world.keys.primary.kid}
    token = sign_raw(world.keys.primary, header, body.encode(), "RS256")  # not session-tracked
    grpc_door = world.doors["grpc"]
    assert isinstance(grpc_door, GrpcDoor)
    with capturing_logs():
        answer = grpc_door.call(
            f"/google.longrunning.Operations/GetOperation?access_token={token}", b"", []
        )
    assert answer.code == "UNIMPLEMENTED"
    assert world.flush_audit()
    records, _ = read_audit(world.audit_file)
    assert records
    assert not [r for r in records if token.split(".")[1][:40] in json.dumps(r)]


# Regression test for KB-5 (found by this suite, fixed in da90600).
def test_the_upstream_address_never_reaches_a_caller() -> None:
    import grpc

    from hardening.bugs import forwarder_failure_when_channel_moved_on

    for state in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.IDLE):
        code, message, reason = forwarder_failure_when_channel_moved_on(state)
        assert (code, reason) == ("UNAVAILABLE", "UPSTREAM_UNAVAILABLE")
        assert "127.0.0.1" not in message


# Regression test for KB-6 (found by this suite, fixed in da90600).
def test_a_token_with_nan_times_is_refused(world: World) -> None:
    from hardening.bugs import nan_time_token

    for claim in ("exp", "iat"):
        answer = world.doors["grpc"].operation("get", DONE_OPERATION, nan_time_token(world, claim))
        assert (answer.code, answer.reason) == ("UNAUTHENTICATED", "JWT_TOKEN_INVALID"), claim
