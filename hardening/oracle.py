"""The oracle: what the example policy says about a call, decided without the gateway's chain.

A call is modelled as (method, request bytes or name, the claims of the caller's token). The
route is worked out here from the service profile's patterns and the README's name rules; the
decision comes from gateway.policy.evaluator.evaluate on the parsed name and the caller.
The decision table in tests/support/policy_cases.py checks the oracle itself before any run.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from gateway.policy import AccessRequest, Caller, evaluate
from gateway.policy.loader import load_policy
from gateway.profile import ServiceProfile, load_profile
from gateway.routing import METHODS_BY_PATH, SERVICE_PREFIX
from gateway.testing.tokens import claims
from hardening.env import AUDIENCE, EXAMPLE_POLICY, ISSUER

MAX_NAME_BYTES = 1024
SERVICE_ACCOUNT_SUFFIX = ".iam.gserviceaccount.com"

# What the oracle expects of a call; "allow" means the upstream must be asked.
ALLOW, DENY, INVALID, UNIMPLEMENTED = "allow", "deny", "invalid", "unimplemented"
GRPC_CODE = {DENY: "PERMISSION_DENIED", INVALID: "INVALID_ARGUMENT", UNIMPLEMENTED: "UNIMPLEMENTED"}

SHORT_METHODS = {
    "get": "GetOperation",
    "list": "ListOperations",
    "cancel": "CancelOperation",
    "delete": "DeleteOperation",
    "wait": "WaitOperation",
}


def method_path(short: str) -> str:
    return f"{SERVICE_PREFIX}{SHORT_METHODS.get(short, short)}"


@dataclass(frozen=True, slots=True)
class Expectation:
    """The oracle's verdict on one call."""

    verdict: str  # allow | deny | invalid | unimplemented
    method: str
    name: str | None = None
    permission: str | None = None
    why: str = ""

    @property
    def allowed(self) -> bool:
        return self.verdict == ALLOW


def name_problem(name: str) -> str | None:
    """The README's rules for a resource name, written out again (not imported)."""
    if not name:
        return "empty"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return "too long"
    if "%" in name:
        return "percent-encoding"
    if any(unicodedata.category(ch)[0] in "CZ" for ch in name):
        return "control or whitespace character"
    if any(segment in ("", ".", "..") for segment in name.split("/")):
        return "empty, . or .. segment"
    return None


def canonical(text: str) -> str:
    """README, Identities: emails, groups and domains compare with ASCII letters folded to
    lower case and nothing else folded (a value with any non-ASCII character is kept exact)."""
    return text.lower() if text.isascii() else text


def caller_of(claims: Mapping[str, Any], *, trust_hd: bool = False) -> Caller:
    """The policy Caller a verified token with these claims stands for (README: Authentication).

    `hd` counts only from an issuer trusted for it (Google's, or `trust_hosted_domain: true`;
    the suite's own issuer is neither); an absent `email_verified` is not verified.
    """
    email = canonical(str(claims["email"]))
    kind = "serviceAccount" if email.endswith(SERVICE_ACCOUNT_SUFFIX) else "user"
    groups = claims.get("groups") or ()
    hd = claims.get("hd") if trust_hd else None
    return Caller(
        member=f"{kind}:{email}",
        email=email,
        email_verified=claims.get("email_verified", False) is True,
        hosted_domain=canonical(hd) if isinstance(hd, str) else None,
        groups=frozenset(canonical(g.removeprefix("group:")) for g in groups),
    )


class Oracle:
    """Decides calls against one policy file and the built-in service profile."""

    def __init__(self, policy: Path = EXAMPLE_POLICY, profile: ServiceProfile | None = None):
        self.profile = profile or load_profile()
        self.policy_path = policy
        self.policy = load_policy(policy, known_permissions=self.profile.permissions)

    def decide(
        self, claims: Mapping[str, Any], method: str, name: str, now: datetime | None = None
    ) -> Expectation:
        """The verdict on `method` (full path) for `name`, by the caller these claims name."""
        routes = self.profile.routes.get(method)
        if routes is None:
            return Expectation(UNIMPLEMENTED, method, name, why="method not routed")
        problem = name_problem(name)
        if problem is not None:
            return Expectation(INVALID, method, name, why=problem)
        parts = name.split("/")
        route = next(
            (
                r
                for r in routes
                if len(r.segments) == len(parts)
                and all(w == "*" or w == p for w, p in zip(r.segments, parts, strict=True))
            ),
            None,
        )
        if route is None:
            return Expectation(INVALID, method, name, why="no pattern matches")
        decision = evaluate(
            self.policy,
            caller_of(claims),
            AccessRequest(route.permission, name),
            now or datetime.now(UTC),
        )
        verdict = ALLOW if decision.allowed else DENY
        return Expectation(verdict, method, name, route.permission, why=decision.reason)

    def decide_bytes(
        self, claims: Mapping[str, Any], method: str, body: bytes, now: datetime | None = None
    ) -> Expectation:
        """As `decide`, for a raw request body: it must parse as the method's request."""
        if method not in self.profile.routes:
            return Expectation(UNIMPLEMENTED, method, why="method not routed")
        known = METHODS_BY_PATH.get(method)
        if known is None:
            return Expectation(UNIMPLEMENTED, method, why="not an Operations method")
        try:
            message = known.request_type.FromString(body)
        except DecodeError:
            return Expectation(INVALID, method, why="body does not parse")
        return self.decide(claims, method, message.name, now)


def table_cases() -> list[tuple[str, Any, str, str, str]]:
    """The example policy's decision table (id, who, method, resource, expected code)."""
    from tests.support.policy_cases import CASES  # run from the repository root, as documented

    return list(CASES)


def who_claims(who: Any) -> dict[str, Any]:
    """The claims a token minted for a table `Who` carries (a None in `extra` removes one)."""
    return claims(ISSUER, AUDIENCE, **who.claims())


def self_check(oracle: Oracle) -> list[str]:
    """Every table case the oracle gets wrong (the table's NOT_FOUND and OK both mean allow)."""
    wrong = []
    for case_id, who, method, resource, expected in table_cases():
        got = oracle.decide(who_claims(who), method_path(method), resource)
        want = ALLOW if expected in ("OK", "NOT_FOUND") else expected
        have = got.verdict if got.allowed else GRPC_CODE[got.verdict]
        if have != want:
            wrong.append(f"{case_id}: oracle says {have}, table says {want}")
    return wrong
