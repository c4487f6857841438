"""Hot reload: every call is decided by exactly one policy version; a bad file changes nothing."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from google.api_core import exceptions as core_exceptions

from gateway.audit.logentry import to_log_entry
from gateway.outcome import MemorySink
from gateway.reference_upstream import start_reference_upstream
from gateway.server import Gateway, start_gateway
from gateway.testing.loop import LoopThread
from tests.support.bearer import with_bearer
from tests.support.stack import FULL_PROFILE, Identity, gateway_settings

NAME = "projects/acme/locations/us-central1/operations/reload"
GRANTING = """
allow:
  - resource: projects/acme
    bindings:
      - role: roles/contactcenterinsights.admin
        members: [user:alice@acme.example]
"""
READ_ONLY = """
allow:
  - resource: projects/acme
    bindings:
      - role: roles/contactcenterinsights.viewer
        members: [user:alice@acme.example]
"""
BROKEN = """
allow:
  - resource: projects/acme
    bindings:
      - role: roles/contactcenterinsights.admn
        members: [user:alice@acme.example]
"""


def _replace(path: Path, text: str) -> None:
    """Write the way a ConfigMap or an editor's save does: a new file renamed into place."""
    fresh = path.with_suffix(".tmp")
    fresh.write_text(text)
    os.replace(fresh, path)


@pytest.fixture
def reloading(
    loop: LoopThread, identity: Identity, tmp_path: Path
) -> Iterator[tuple[Gateway, MemorySink, Path, grpc.Channel]]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(GRANTING)
    upstream = loop.run(start_reference_upstream("127.0.0.1:0", seed=False))
    upstream.store.create(NAME)
    settings = gateway_settings(upstream.address, identity, policy)
    settings = dataclasses.replace(
        settings,
        authorization=dataclasses.replace(
            settings.authorization, reload_interval_s=0.01, profile_file=FULL_PROFILE
        ),
    )
    sink = MemorySink()
    gateway = loop.run(start_gateway(settings, sink=sink))
    channel = with_bearer(
        grpc.insecure_channel(gateway.address), identity.token(email="alice@acme.example")
    )
    try:
        yield gateway, sink, policy, channel
    finally:
        loop.run(gateway.stop(0))
        loop.run(upstream.stop(0))


def _cancel(channel: grpc.Channel) -> str:
    from google.api_core import operations_v1

    try:
        operations_v1.OperationsClient(channel).cancel_operation(NAME, retry=None, timeout=10)
    except core_exceptions.GoogleAPICallError as err:
        return err.grpc_status_code.name
    return "OK"


def _wait_for_etag(gateway: Gateway, etag: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while gateway.pipeline.policies.current.etag != etag:
        assert time.monotonic() < deadline, "the new policy never came into force"
        time.sleep(0.01)


def test_rewrites_under_load_never_mix_versions(reloading) -> None:
    gateway, sink, policy, channel = reloading
    granting_etag = gateway.pipeline.policies.current.etag
    stop = threading.Event()

    def caller() -> list[str]:
        codes = []
        while not stop.is_set():
            codes.append(_cancel(channel))
        return codes

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(caller) for _ in range(4)]
        for rewrite in range(100):
            _replace(policy, READ_ONLY if rewrite % 2 == 0 else GRANTING)
            time.sleep(0.015)
        stop.set()
        codes = [code for future in futures for code in future.result()]

    assert set(codes) <= {"OK", "PERMISSION_DENIED"}, set(codes)  # never an error
    decided = [o for o in sink.outcomes() if o.call.verdict is not None]
    assert len(decided) == len(codes) > 100
    etags = {o.call.verdict.decision.policy_etag for o in decided}
    assert len(etags) == 2 and granting_etag in etags  # both versions were really in force
    for outcome in decided:
        granted_by_version = outcome.call.verdict.decision.policy_etag == granting_etag
        assert (outcome.code.name == "OK") == granted_by_version  # decided by one version only
    assert gateway.pipeline.reloaders[0].reloads >= 2


def test_an_invalid_rewrite_changes_nothing(reloading) -> None:
    gateway, _, policy, channel = reloading
    reloader = gateway.pipeline.reloaders[0]
    good = gateway.pipeline.policies.current.etag
    assert _cancel(channel) == "OK"
    _replace(policy, BROKEN)
    deadline = time.monotonic() + 5
    while reloader.rejected == 0:
        assert time.monotonic() < deadline, "the broken file was never looked at"
        time.sleep(0.01)
    assert gateway.pipeline.policies.current.etag == good
    assert _cancel(channel) == "OK"
    _replace(policy, READ_ONLY)
    deadline = time.monotonic() + 5
    while gateway.pipeline.policies.current.etag == good:
        assert time.monotonic() < deadline, "the good rewrite never came into force"
        time.sleep(0.01)
    assert _cancel(channel) == "PERMISSION_DENIED"
    _replace(policy, GRANTING)
    _wait_for_etag(gateway, good)
    assert _cancel(channel) == "OK"


def test_dry_run_candidate_is_recorded_where_it_differs_and_changes_nothing(
    loop: LoopThread, identity: Identity, tmp_path: Path
) -> None:
    enforced, candidate = tmp_path / "enforced.yaml", tmp_path / "candidate.yaml"
    enforced.write_text(GRANTING)  # alice may cancel
    candidate.write_text(READ_ONLY)  # ... the candidate would stop that, but allow reads
    upstream = loop.run(start_reference_upstream("127.0.0.1:0", seed=False))
    upstream.store.create(NAME)
    settings = gateway_settings(upstream.address, identity, enforced)
    settings = dataclasses.replace(
        settings,
        authorization=dataclasses.replace(
            settings.authorization, dry_run_policy_file=candidate, profile_file=FULL_PROFILE
        ),
    )
    sink = MemorySink()
    gateway = loop.run(start_gateway(settings, sink=sink))
    try:
        channel = with_bearer(
            grpc.insecure_channel(gateway.address), identity.token(email="alice@acme.example")
        )
        assert _cancel(channel) == "OK"  # enforced policy decides: the candidate changes nothing
        from google.api_core import operations_v1

        operations_v1.OperationsClient(channel).get_operation(NAME, retry=None, timeout=10)
    finally:
        loop.run(gateway.stop(0))
        loop.run(upstream.stop(0))
    cancel, get = sink.outcomes()
    shadow = gateway.pipeline.audit.event(cancel).shadow_decision
    assert shadow is not None and shadow["granted"] is False  # would have been denied
    record = to_log_entry(gateway.pipeline.audit.event(cancel))
    assert record["protoPayload"]["metadata"]["shadowDecision"]["granted"] is False
    assert shadow["policyEtag"] != cancel.call.verdict.decision.policy_etag
    assert gateway.pipeline.audit.event(get).shadow_decision is None  # same outcome: no entry
