"""The compiled tier's hot reload, with a real Envoy watching the files `opsgate envoy-compile`
writes: a policy edit takes effect without a restart; a policy that does not compile changes
nothing; a listener Envoy itself rejects is NACKed and the config in force keeps serving; and
`opsgate envoy-compile --watch` recompiles on a policy change by itself."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from google.longrunning import operations_pb2

from gateway.envoy.compiled.problems import Refused
from gateway.envoy.compiled.resources import CLUSTERS_FILE, LISTENERS_FILE, write_atomically
from gateway.policy.loader import load_policy
from gateway.testing.envoy import envoy_available
from gateway.testing.loop import LoopThread
from gateway.testing.processes import ServerProcess, python_module
from tests.support.compiled_stack import CompiledStack, code_of, compiled_stack
from tests.support.stack import Identity

pytestmark = pytest.mark.skipif(not envoy_available(), reason="no envoy binary")

GET = "/google.longrunning.Operations/GetOperation"
NAME = "projects/acme/locations/us/operations/op1"
OTHER = "projects/globex/locations/us/operations/op1"
LDS_SUCCESS = "listener_manager.lds.update_success"
LDS_REJECTED = "listener_manager.lds.update_rejected"


def policy_for(*members: str) -> str:
    listed = ", ".join(members)
    return (
        "allow:\n"
        "  - resource: projects/acme\n"
        "    bindings:\n"
        "      - role: roles/contactcenterinsights.viewer\n"
        f"        members: [{listed}]\n"
    )


BOB_ONLY = policy_for("user:bob@example.com")
WITH_ALICE = policy_for("user:bob@example.com", "user:alice@example.com")  # the token's email
NOT_COMPILED = WITH_ALICE.replace(
    "user:alice@example.com]",
    "user:alice@example.com]\n"
    "        condition:\n"
    "          title: not compiled\n"
    "          expression: resource.name.matches('^projects/acme/')\n",
)


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(BOB_ONLY)
    return path


@pytest.fixture
def stack(loop: LoopThread, identity: Identity, policy: Path) -> Iterator[CompiledStack]:
    with compiled_stack(loop, identity, policy) as running:
        yield running


def ask(stack: CompiledStack, identity: Identity, name: str = NAME) -> str:
    request = operations_pb2.GetOperationRequest(name=name).SerializeToString()
    metadata = [("authorization", f"Bearer {identity.token()}")]
    return code_of(stack.envoy_channel, GET, request, metadata)


def stat(stack: CompiledStack, name: str) -> int:
    return stack.envoy.stats(f"^{re.escape(name)}$").get(name, 0)


def eventually(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.05)


def files(stack: CompiledStack) -> dict[str, bytes]:
    directory = stack.compiler.layout.directory
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def version_in_force(stack: CompiledStack) -> str:
    """The LDS version Envoy last accepted (its text stat; the config dump's active_state keeps
    the listener's first version across an in-place filter-chain update in Envoy 1.40)."""
    query = "/stats?format=json&filter=" + urllib.parse.quote(
        r"^listener_manager\.lds\.version_text$"
    )
    (found,) = json.loads(stack.envoy.admin_get(query))["stats"]
    return str(found["value"])


def test_a_policy_edit_takes_effect_without_a_restart(
    stack: CompiledStack, identity: Identity, policy: Path
) -> None:
    pid, successes = stack.envoy.pid, stat(stack, LDS_SUCCESS)
    assert ask(stack, identity) == "PERMISSION_DENIED"
    policy.write_text(WITH_ALICE)
    version = stack.recompile()
    assert version == load_policy(policy, stack.compiler.profile.permissions).etag
    eventually(lambda: ask(stack, identity) == "OK", "the new policy's grant")
    assert stack.envoy.pid == pid and stack.envoy.process.alive()
    assert stack.envoy.starts == 1
    assert stat(stack, LDS_SUCCESS) > successes
    assert version_in_force(stack) == version
    assert ask(stack, identity, OTHER) == "PERMISSION_DENIED"  # granted only where it says
    # And back: a revocation is picked up the same way.
    policy.write_text(BOB_ONLY)
    stack.recompile()
    eventually(lambda: ask(stack, identity) == "PERMISSION_DENIED", "the grant's removal")
    assert stack.envoy.pid == pid


def _alice_granted(stack: CompiledStack, identity: Identity, policy: Path) -> str:
    """WITH_ALICE compiled and in force, its grant seen by a call; the version."""
    policy.write_text(WITH_ALICE)
    version = stack.recompile()
    eventually(lambda: version_in_force(stack) == version, "the first policy in force")
    # A connection made before the update keeps the old filters until Envoy drains it.
    eventually(lambda: ask(stack, identity) == "OK", "the first policy's grant")
    return version


def test_a_policy_that_does_not_compile_changes_nothing(
    stack: CompiledStack, identity: Identity, policy: Path
) -> None:
    version = _alice_granted(stack, identity, policy)
    before, successes = files(stack), stat(stack, LDS_SUCCESS)
    policy.write_text(NOT_COMPILED)
    with pytest.raises(Refused) as refused:
        stack.recompile()
    line = (
        NOT_COMPILED.splitlines().index(
            "          expression: resource.name.matches('^projects/acme/')"
        )
        + 1
    )
    assert any(p.source == str(policy) and p.line == line for p in refused.value.problems)
    assert files(stack) == before
    time.sleep(1.0)  # what Envoy would need to notice a change, were there one
    assert stat(stack, LDS_SUCCESS) == successes
    assert version_in_force(stack) == version
    assert ask(stack, identity) == "OK"
    assert ask(stack, identity, OTHER) == "PERMISSION_DENIED"


def test_a_listener_envoy_rejects_is_nacked_and_the_old_one_serves(
    stack: CompiledStack, identity: Identity, policy: Path
) -> None:
    version = _alice_granted(stack, identity, policy)
    pid, rejected = stack.envoy.pid, stat(stack, LDS_REJECTED)
    successes = stat(stack, LDS_SUCCESS)
    lds = stack.compiler.layout.directory / LISTENERS_FILE
    text = lds.read_text(encoding="utf-8")
    assert '"regex":"' in text
    broken = json.loads(text.replace('"regex":"', '"regex":"(', 1))  # an unclosed group
    broken["version_info"] = "broken"
    write_atomically(lds, json.dumps(broken))
    eventually(lambda: stat(stack, LDS_REJECTED) > rejected, "Envoy's NACK of the listener")
    time.sleep(1.5)  # longer than Envoy's drain: a change taken in spite of the NACK shows
    assert stat(stack, LDS_SUCCESS) == successes
    assert version_in_force(stack) == version
    assert stack.envoy.pid == pid
    assert ask(stack, identity) == "OK"
    assert ask(stack, identity, OTHER) == "PERMISSION_DENIED"
    # A good listener after the bad one is taken again.
    policy.write_text(BOB_ONLY)
    fixed = stack.recompile()
    eventually(lambda: version_in_force(stack) == fixed, "the next good listener")
    eventually(lambda: ask(stack, identity) == "PERMISSION_DENIED", "the next policy's decision")
    assert stack.envoy.pid == pid


def test_envoy_compile_watch_recompiles_on_a_policy_change(
    stack: CompiledStack, identity: Identity, policy: Path, tmp_path: Path
) -> None:
    config = identity.directory / "opsgate.yaml"  # the stack's own config (gateway_settings)
    assert str(policy) in config.read_text()
    out = stack.compiler.layout.directory
    log = tmp_path / "watch.log"
    argv = python_module(
        "gateway", "envoy-compile", "--config", str(config), "--out", str(out),
        "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--watch", "--interval", "0.2",
    )  # fmt: skip
    watcher = ServerProcess(argv, name="envoy-compile-watch", log_path=log)

    def written() -> list[str]:
        return [line for line in watcher.lines if "compiled policy" in line]

    try:
        eventually(lambda: len(written()) == 1 or not watcher.alive(), "the first compile")
        assert watcher.alive(), watcher.log_tail()
        first = load_policy(policy, stack.compiler.profile.permissions).etag
        assert first in written()[0]
        assert sorted(p.name for p in out.iterdir()) == sorted(
            ["bootstrap.yaml", LISTENERS_FILE, CLUSTERS_FILE]
        )
        time.sleep(0.5)  # the watcher takes the policy file's stamp after its first write
        pid, successes = stack.envoy.pid, stat(stack, LDS_SUCCESS)
        assert ask(stack, identity) == "PERMISSION_DENIED"
        policy.write_text(WITH_ALICE)
        eventually(lambda: ask(stack, identity) == "OK", "the watcher's recompile in force")
        second = load_policy(policy, stack.compiler.profile.permissions).etag
        assert len(written()) == 2 and second in written()[1], watcher.log_tail()
        assert stat(stack, LDS_SUCCESS) > successes
        assert stack.envoy.pid == pid
        # A policy that does not compile: the watcher says why, and nothing changes.
        before = files(stack)
        policy.write_text(NOT_COMPILED)
        eventually(
            lambda: any("does not compile" in line for line in watcher.lines),
            "the watcher's refusal",
        )
        assert watcher.alive()
        assert files(stack) == before
        assert ask(stack, identity) == "OK"
    finally:
        watcher.stop()
    assert not watcher.alive()
