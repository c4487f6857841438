"""Coverage-guided fuzzing (atheris, optional) of the gateway's request path without a network.

Each input picks an Operations method and a body; the body goes through what the route stage
does (parse, then ServiceProfile.access_for) and the policy decision, and is compared with the
oracle. Anything but DecodeError, InvalidArgument or Unimplemented is a crash; so is any
disagreement with the oracle. Run as a module (atheris calls sys.exit when done):

    python -m hardening.atheris_target -max_total_time=60 CORPUS_DIR
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import atheris

with atheris.instrument_imports():
    from google.protobuf.message import DecodeError

    from gateway.errors import InvalidArgument, Unimplemented
    from gateway.policy import AccessRequest, evaluate
    from gateway.profile import load_profile
    from gateway.routing import OPERATIONS_METHODS

from hardening.oracle import ALLOW, DENY, Oracle, caller_of

PROFILE = load_profile()
ORACLE = Oracle(profile=PROFILE)
NOW = datetime.now(UTC)
CALLERS = [
    {"email": "alice@acme.example", "email_verified": True},
    {"email": "bob@acme.example", "email_verified": True},
    {"email": "carol@acme.example", "email_verified": True, "groups": ["support@acme.example"]},
    {"email": "ana@globex.example", "email_verified": True, "groups": ["analysts@globex.example"]},
]


def one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    method = OPERATIONS_METHODS[data[0] % len(OPERATIONS_METHODS)]
    claims = CALLERS[data[1] % len(CALLERS)]
    body = data[2:]
    try:
        message = method.request_type.FromString(body)
    except DecodeError:
        return
    try:
        access = PROFILE.access_for(method.path, message.name)
    except (InvalidArgument, Unimplemented) as refused:
        verdict = ORACLE.decide(claims, method.path, message.name, NOW).verdict
        if verdict in (ALLOW, DENY):
            problem = f"gateway refused a name the oracle routes: {message.name!r}"
            raise AssertionError(problem) from refused
        return
    decision = evaluate(
        ORACLE.policy, caller_of(claims), AccessRequest(access.permission, access.resource), NOW
    )
    expected = ORACLE.decide(claims, method.path, message.name, NOW)
    if expected.verdict not in (ALLOW, DENY):
        raise AssertionError(f"gateway routed a name the oracle refuses: {message.name!r}")
    if decision.allowed != expected.allowed:
        raise AssertionError(f"decision differs for {message.name!r}")


def seed_corpus(directory: str) -> None:
    """Real requests for every method, caller and seeded resource: a start for mutation."""
    from pathlib import Path

    from hardening.doors import request_body
    from hardening.fuzz import RESOURCES

    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    shorts = ["get", "list", "cancel", "delete", "wait"]
    for m, short in enumerate(shorts):
        for c in range(len(CALLERS)):
            for r, resource in enumerate(RESOURCES):
                data = bytes([m, c]) + request_body(short, resource)
                (target / f"seed-{m}-{c}-{r}").write_bytes(data)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--seed-corpus":
        seed_corpus(sys.argv[2])
    else:
        main()
