"""Starts a real reference upstream and a real gateway on 127.0.0.1 port 0 for end-to-end tests."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.api_core import operations_v1

from gateway.config import Settings, load_settings
from gateway.outcome import MemorySink
from gateway.reference_upstream import ReferenceUpstream
from gateway.server import Gateway, start_gateway
from gateway.testing.loop import LoopThread
from gateway.testing.tokens import SigningKey, claims, jwks, rsa_key
from gateway.testing.upstream import running_upstream
from tests.support.bearer import with_bearer

ISSUER = "https://idp.opsgate.test"
AUDIENCE = "opsgate-tests"
EXAMPLE_POLICY = Path(__file__).resolve().parents[2] / "policies" / "example.yaml"
FULL_PROFILE = Path(__file__).resolve().parent / "full_profile.yaml"
# With FULL_PROFILE, lets every caller do anything under projects/acme, so that tests about
# forwarding are not about policy.
OPEN_POLICY = """
allow:
  - resource: projects/acme
    bindings:
      - role: roles/contactcenterinsights.admin
        members: [allAuthenticatedUsers]
      - role: projects/acme/roles/deleter
        members: [allAuthenticatedUsers]
roles:
  - name: projects/acme/roles/deleter
    title: Deletes operations
    includedPermissions: [contactcenterinsights.operations.delete]
"""


@dataclass
class Identity:
    """A test identity provider: one signing key, its JWKS in a file, and tokens it signs."""

    key: SigningKey
    directory: Path

    @property
    def jwks_file(self) -> Path:
        return self.directory / "jwks.json"

    def token(self, **overrides: Any) -> str:
        return self.key.sign(claims(ISSUER, AUDIENCE, **overrides))

    def issuer_yaml(self, **fields: Any) -> str:
        """The `authentication:` section trusting this identity (extra issuer fields allowed)."""
        extra = "".join(f"      {key}: {json.dumps(value)}\n" for key, value in fields.items())
        return (
            "authentication:\n"
            "  issuers:\n"
            f"    - issuer: {ISSUER}\n"
            f"      audiences: [{AUDIENCE}]\n"
            f"      jwks_file: {self.jwks_file}\n"
            "      groups_claim: groups\n"
            f"{extra}"
        )

    def policy_yaml(self, policy: Path | None = None) -> str:
        """The `authorization:` section; without `policy`, one that lets any caller do anything
        under projects/acme (the forwarding tests' resources)."""
        if policy is None:
            policy = self.directory / "open-policy.yaml"
            policy.write_text(OPEN_POLICY)
            return f"authorization:\n  policy_file: {policy}\n  profile_file: {FULL_PROFILE}\n"
        return f"authorization:\n  policy_file: {policy}\n"


def make_identity(directory: Path) -> Identity:
    identity = Identity(rsa_key(), directory)
    identity.jwks_file.write_text(json.dumps(jwks(identity.key)))
    return identity


def gateway_settings(
    upstream_address: str,
    identity: Identity,
    policy: Path | None = None,
    extra_yaml: str = "",
    authentication_yaml: str = "",
    authorization_yaml: str = "",
) -> Settings:
    """Settings for a gateway on a free port in front of `upstream_address`, trusting `identity`
    (`extra_yaml`: more top-level sections, e.g. `envoy: {}`; `authentication_yaml`: more keys
    of the `authentication` section, indented by two; `authorization_yaml` the same for
    `authorization`)."""
    path = identity.directory / "opsgate.yaml"
    path.write_text(
        f"listen: 127.0.0.1:0\nupstream:\n  target: {upstream_address}\n"
        + identity.issuer_yaml()
        + authentication_yaml
        + identity.policy_yaml(policy)
        + authorization_yaml
        + quiet_audit_yaml(identity.directory)
        + extra_yaml
    )
    return load_settings(path)


_AUDIT_FILES = itertools.count()


def quiet_audit(directory: Path) -> dict[str, Any]:
    """The `audit` settings for a test gateway: records go to a file of its own in `directory`,
    not to stdout, where they would end up in pytest's output (the writer thread can write
    after a test's output capture has ended). Tests read records from a MemorySink, or set
    the audit file they read themselves."""
    audit_file = directory / f"audit-{next(_AUDIT_FILES)}.log"
    return {"sink": "file", "file": {"path": str(audit_file), "fsync": "never"}}


def quiet_audit_yaml(directory: Path) -> str:
    """quiet_audit as the config file's `audit:` section."""
    return f"audit: {json.dumps(quiet_audit(directory))}\n"  # JSON is YAML


@dataclass
class Stack:
    """A running upstream + gateway pair, with sync channels to each."""

    loop: LoopThread
    upstream: ReferenceUpstream
    gateway: Gateway
    sink: MemorySink
    identity: Identity
    raw_gateway_channel: grpc.Channel  # no credentials: tests add their own metadata
    gateway_channel: grpc.Channel  # every call carries a valid bearer token
    upstream_channel: grpc.Channel
    settings: Settings | None = None  # the gateway's, as loaded

    def via_gateway(self) -> operations_v1.OperationsClient:
        return operations_v1.OperationsClient(self.gateway_channel)

    def direct(self) -> operations_v1.OperationsClient:
        return operations_v1.OperationsClient(self.upstream_channel)

    def with_token(self, token: str | None) -> operations_v1.OperationsClient:
        return operations_v1.OperationsClient(with_bearer(self.raw_gateway_channel, token))


@contextmanager
def running_stack(
    loop: LoopThread,
    identity: Identity,
    *,
    seed: bool = True,
    policy: Path | None = None,
    extra_yaml: str = "",
    authentication_yaml: str = "",
    authorization_yaml: str = "",
) -> Iterator[Stack]:
    with ExitStack() as stack:
        upstream = stack.enter_context(running_upstream(loop, seed=seed))
        sink = MemorySink()
        settings = gateway_settings(
            upstream.address, identity, policy, extra_yaml, authentication_yaml, authorization_yaml
        )
        gateway = loop.run(start_gateway(settings, sink=sink))
        stack.callback(lambda: loop.run(gateway.stop(0)))
        raw_channel = stack.enter_context(grpc.insecure_channel(gateway.address))
        upstream_channel = stack.enter_context(grpc.insecure_channel(upstream.address))
        yield Stack(
            loop,
            upstream,
            gateway,
            sink,
            identity,
            raw_channel,
            with_bearer(raw_channel, identity.token()),
            upstream_channel,
            settings,
        )
