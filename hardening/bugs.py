"""Gateway bugs this suite found, each with a reproduction run on every pass.

While a bug was open its trigger was kept out of the random attacks (so a known bug could not
mask a new one); all six were fixed in da90600 and their triggers are drawn again. The probes
stay as regression checks: each says whether its bug reproduces.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.reference_upstream.seed import DONE_OPERATION, STAGING_OPERATION
from gateway.testing.loop import LoopThread
from hardening.doors import GrpcDoor
from hardening.env import Workdir, mint, replace_file, wait_until
from hardening.ledger import capturing_logs
from hardening.world import running_world


@dataclass
class KnownBug:
    key: str
    title: str
    where: str
    reproduction: str
    expected: str
    probe: Callable[[Workdir, LoopThread], tuple[bool, str]]
    fixed_in: str = "da90600"  # the commit that fixed it (reported when it no longer reproduces)

    def run(self, workdir: Workdir, loop: LoopThread) -> dict[str, Any]:
        started = time.monotonic()
        try:
            # Its own log capture: the crash a probe provokes is expected, and not counted.
            with capturing_logs():
                reproduced, evidence = self.probe(workdir, loop)
        except Exception as exc:  # a probe that cannot run says so; it is not a pass
            reproduced, evidence = True, f"probe failed: {type(exc).__name__}: {exc}"
        return {
            "key": self.key,
            "title": self.title,
            "where": self.where,
            "reproduction": self.reproduction,
            "expected": self.expected,
            "reproduced": reproduced,
            "fixed_in": self.fixed_in,
            "evidence": evidence,
            "seconds": round(time.monotonic() - started, 2),
        }


def _non_ascii_principal(workdir: Workdir, loop: LoopThread) -> tuple[bool, str]:
    with capturing_logs() as logs, running_world(workdir, loop) as world:
        seen = []
        for email in ("zoë@acme.example", "bob@acme.example\r\nx-opsgate-principal: user:alice"):
            token = mint(world.keys.primary, email=email, hd="acme.example")
            for name, door in world.doors.items():
                answer = door.operation("get", STAGING_OPERATION, token)
                seen.append(f"{name}: {email.encode('unicode_escape').decode()} -> {answer.code}")
        crashes = [line for line in logs.unhandled if "unexpected error" in line]
    internal = [s for s in seen if s.endswith("INTERNAL")]
    evidence = "; ".join(seen) + f"; unexpected-error tracebacks logged: {len(crashes)}"
    if crashes:
        evidence += f" (e.g. {crashes[0][-160:]})"
    return bool(internal or crashes), evidence


def _loader_value_error(workdir: Workdir, loop: LoopThread) -> tuple[bool, str]:
    from gateway.config import load_settings
    from gateway.server import start_gateway

    with running_world(workdir, loop, with_rest=False) as world:
        # A second gateway on the same upstream, watching its own policy file every 50 ms.
        policy = workdir.policy_copy("reloaded.yaml")
        settings = load_settings(workdir.path / "opsgate.yaml")
        settings = dataclasses.replace(
            settings,
            authorization=dataclasses.replace(
                settings.authorization, policy_file=policy, reload_interval_s=0.05
            ),
        )
        gateway = loop.run(start_gateway(settings))
        try:
            door = GrpcDoor(gateway.address)
            token = world.token({"email": "alice@acme.example"})
            before = door.operation("get", DONE_OPERATION, token).code
            original = policy.read_text()
            replace_file(policy, "description: 2024-02-30\n" + original)  # an impossible date
            time.sleep(0.5)
            replace_file(policy, "{}\n")  # a valid deny-all version
            applied = wait_until(
                lambda: door.operation("get", DONE_OPERATION, token).code == "PERMISSION_DENIED",
                3.0,
            )
            watchers = [t for t in gateway.background if "watch" in t.get_name()]
            dead = [t for t in watchers if t.done()]
            # Retrieved here, so asyncio does not report them later, in someone else's run.
            errors = [repr(t.exception())[:120] for t in dead if not t.cancelled()]
            door.close()
        finally:
            loop.run(gateway.stop(0))
    evidence = (
        f"before: {before}; after an impossible date, then a valid deny-all file: deny-all "
        f"{'applied' if applied else 'never applied'}; policy watcher tasks finished: "
        f"{len(dead)} of {len(watchers)} ({'; '.join(errors)})"
    )
    return (not applied) or bool(dead), evidence


def _header_logged(workdir: Workdir, loop: LoopThread) -> tuple[bool, str]:
    from hardening.tokens import sign_raw

    with capturing_logs() as logs, running_world(workdir, loop) as world:
        rest = world.doors.get("rest")
        if rest is None:
            return False, "no REST door in this tree"
        # A valid token with one stray control character (a copy-paste accident), and an
        # over-long opaque one; signed by hand so the test session's leak watch ignores it.
        body = {"iss": "https://idp.hardening.test", "email": "alice@acme.example"}
        header = {"alg": "RS256", "kid": world.keys.primary.kid}
        token = sign_raw(world.keys.primary, header, json.dumps(body).encode(), "RS256")
        stray = token[:40] + "\x0b" + token[40:]
        over_long = "ya29.NOT-A-REAL-TOKEN-" + "s" * 70_000
        answers = [rest.operation("get", STAGING_OPERATION, t) for t in (stray, over_long)]
        time.sleep(0.2)
    payload = token.split(".")[1][:24]
    quoting = [
        line
        for line in logs.lines
        if payload in line.message + line.traceback
        or "NOT-A-REAL-TOKEN" in line.message + line.traceback
    ]
    codes = ", ".join(str(a.http_status) for a in answers)
    evidence = f"REST answers: {codes}; ERROR records quoting the token: {len(quoting)}"
    if quoting:
        text = quoting[0].message + quoting[0].traceback
        start = text.find("Bearer")
        evidence += f" ({quoting[0].logger}: ...{text[start : start + 40]!r}...)"
    return bool(quoting), evidence


def _token_in_path(workdir: Workdir, loop: LoopThread) -> tuple[bool, str]:
    from hardening.ledger import read_audit
    from hardening.tokens import sign_raw

    with capturing_logs(), running_world(workdir, loop, with_rest=False) as world:
        # Signed by hand (sign_raw), so the test session's own leak watch does not count it.
        body = {"iss": "https://idp.hardening.test", "email": "alice@acme.example"}
        header = {"alg": "RS256", "kid": world.keys.primary.kid}
        token = sign_raw(world.keys.primary, header, json.dumps(body).encode(), "RS256")
        method = f"/google.longrunning.Operations/GetOperation?access_token={token}"
        grpc_door = world.doors["grpc"]
        assert isinstance(grpc_door, GrpcDoor)
        answer = grpc_door.call(method, b"", [])
        world.flush_audit()
        records, _ = read_audit(world.audit_file)
    payload = token.split(".")[1][:40]
    holding = [r for r in records if payload in json.dumps(r)]
    evidence = f"answer {answer.code}; audit records holding the token: {len(holding)}"
    if holding:
        evidence += f" (methodName {holding[0]['protoPayload']['methodName'][:70]}...)"
    return bool(holding), evidence


REFUSED = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:50051: "
    "Failed to connect to remote host: Connection refused"
)


def forwarder_failure_when_channel_moved_on(state: Any) -> tuple[str, str, str | None]:
    """What the forwarder makes of grpc's own connect error when, by the time it looks, the
    channel is in `state` (the race seen live when the upstream restarts): (code, message,
    reason)."""
    import grpc

    from gateway.upstream.forwarder import UpstreamForwarder, UpstreamHeaders

    class _Channel:
        def unary_unary(self, path: str) -> Any:
            return None

        def get_state(self, try_to_connect: bool = False) -> Any:
            return state

    forwarder = UpstreamForwarder(
        _Channel(),
        "127.0.0.1:50051",
        UpstreamHeaders(forward_authorization=False, identity_header=None),
    )
    error = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), REFUSED
    )
    failure = forwarder._failure(error)
    return failure.code.name, failure.message, getattr(failure, "reason", None)


def _upstream_address_leak(workdir: Workdir, loop: LoopThread) -> tuple[bool, str]:
    import grpc

    seen = []
    for state in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.IDLE):
        code, message, reason = forwarder_failure_when_channel_moved_on(state)
        seen.append(f"channel {state.name}: {code} {reason} {message[:70]!r}")
    leaked = [line for line in seen if "ipv4:" in line]
    return bool(leaked), "; ".join(seen)


def nan_time_token(world: Any, claim: str) -> str:
    """A token from the world's issuer whose `claim` is NaN (Python's json writes NaN; the
    gateway's json.loads reads it back), signed by hand so the test session's leak watch
    leaves it alone."""
    from gateway.testing.tokens import claims as valid_claims
    from hardening.env import AUDIENCE, ISSUER
    from hardening.tokens import sign_raw

    body = valid_claims(ISSUER, AUDIENCE, email="alice@acme.example")
    body[claim] = float("nan")
    if claim == "iat":
        body["exp"] = body["exp"] + 10 * 365 * 86400  # ten years: max_lifetime_s is 3600
    header = {"alg": "RS256", "typ": "JWT", "kid": world.keys.primary.kid}
    return sign_raw(world.keys.primary, header, json.dumps(body).encode(), "RS256")


def _nan_times(workdir: Workdir, loop: LoopThread) -> tuple[bool, str]:
    with running_world(workdir, loop, with_rest=False) as world:
        seen = []
        for claim in ("exp", "iat"):
            answer = world.doors["grpc"].operation(
                "get", DONE_OPERATION, nan_time_token(world, claim)
            )
            seen.append(f"{claim} NaN -> {answer.code} {answer.reason or ''}".strip())
    accepted = [s for s in seen if "UNAUTHENTICATED" not in s]
    return bool(accepted), "; ".join(seen)


KNOWN_BUGS = [
    KnownBug(
        "KB-1",
        "A verified principal with non-ASCII or control characters crashes the forwarder",
        "gateway/upstream/forwarder.py (UpstreamHeaders.outgoing puts principal.member in the "
        "x-opsgate-principal header unchecked; forward() catches only AioRpcError)",
        "A JWT from the configured issuer with email `zoë@acme.example` (RFC 6531 addresses "
        "are legal in `email`), email_verified true, hd acme.example; policies/example.yaml "
        "grants domain:acme.example viewer on acme-staging. GetOperation "
        f"{STAGING_OPERATION}: the policy allows it, the forwarder's upstream call raises "
        "grpc ExecuteBatchError (invalid metadata value), the audit stage logs 'unexpected "
        "error' with a traceback and answers INTERNAL. Same over REST, and for CR/LF in email.",
        "OK (the identity header encoded, e.g. percent-encoded or as x-opsgate-principal-bin), "
        "or a deliberate refusal; never an unhandled exception.",
        _non_ascii_principal,
    ),
    KnownBug(
        "KB-2",
        "A YAML scalar that fails to construct escapes the loader and stops policy hot reload",
        "gateway/sourcefile.py load_text (catches only yaml.YAMLError; PyYAML raises ValueError "
        "for an impossible date such as 2024-02-30 or an integer over 4300 digits)",
        "Replace the policy file of a running gateway with policies/example.yaml plus the line "
        "`description: 2024-02-30`: PolicyReloader.reload catches only ConfigError, so the "
        "ValueError ends the watch task silently; a later valid version ({} = deny all) is never "
        "applied. `opsgate policy check` on such a file exits 1 with a traceback.",
        "The version rejected with file:line like any invalid policy (the last good one stays), "
        "and later versions still reloaded.",
        _loader_value_error,
    ),
    KnownBug(
        "KB-3",
        "The REST door logs bearer tokens from malformed Authorization headers at ERROR",
        "gateway/rest/server.py (aiohttp's server logger is left as it is: on a header it "
        "refuses, BadHttpMessage or LineTooLong, it logs 'Error handling request' with a "
        "traceback quoting the offending header line)",
        "Send a valid token with one stray control character (`Authorization: Bearer "
        "eyJ...\\x0b...`, a copy-paste accident) to the REST door: the answer is a proper "
        "400, but the `aiohttp.server` logger writes an ERROR whose message quotes the whole "
        "header line, token included; an over-long header (70,000 characters) has its first "
        "100 bytes quoted. Against the README's 'Logs never contain tokens'.",
        "The request refused without the header's value in any log line (a filter on the "
        "aiohttp.server logger, or the door answering malformed headers itself).",
        _header_logged,
    ),
    KnownBug(
        "KB-4",
        "A token in the gRPC :path query string is written into the audit record",
        "gateway/call.py (recorded_method) and gateway/audit/logentry.py (methodName is built from "
        "the raw :path; an unknown method is recorded, and its detail logged, as sent)",
        "Call the method `/google.longrunning.Operations/GetOperation?access_token=<JWT>` (any "
        "gRPC client sends it as the :path; clients used to REST put tokens there): the "
        "answer is UNIMPLEMENTED, and the audit "
        "record's protoPayload.methodName holds the whole token (so does the debug log line), "
        "against the README's 'Never a token ... the record has no field that could hold one'.",
        "methodName limited to the known Operations methods (anything else recorded as, say, "
        "`unknown`) or the path cut at '?' and bounded in length.",
        _token_in_path,
    ),
    KnownBug(
        "KB-5",
        "Callers are sometimes told the upstream's address when it restarts",
        "gateway/upstream/forwarder.py _failure: the 'unreachable' test reads the channel state "
        "after the call failed; when it has moved on (READY or IDLE again) grpc's own error is "
        "relayed as if the upstream had sent it",
        "Kill and restart `python -m gateway upstream` under load (the fault run now counts "
        "any such answer as a violation): a few calls got UNAVAILABLE "
        "'failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:PORT: Failed "
        "to connect to remote host: Connection refused' without ErrorInfo (others 'Stream "
        "removed (...)'), where the README promises 'The service is currently unavailable.' "
        "(UPSTREAM_UNAVAILABLE) and the address only in the gateway's log. The probe feeds "
        "_failure grpc's connect error with the channel READY/IDLE, as the race leaves it.",
        "Every failure that is not a status the upstream sent (no trailing metadata from it) "
        "answered as UPSTREAM_UNAVAILABLE, whatever the channel's state by then.",
        _upstream_address_leak,
    ),
    KnownBug(
        "KB-6",
        "A NaN exp (or iat) in a signed token passes every time check",
        "gateway/authn/claims.py (numeric_date accepts any float; every comparison with NaN "
        "is false, so check_times neither expires it nor limits its lifetime)",
        'A token from the configured issuer with `"exp": NaN` (what Python\'s json.dumps '
        "writes for float('nan'); json.loads reads it) is accepted and never expires; with "
        '`"iat": NaN` and exp ten years ahead, the max_lifetime_s check is skipped. The '
        "README: claims must have their RFC types (NaN is not JSON). It needs the issuer's "
        "signature, so it is defence in depth, not a forgery.",
        "UNAUTHENTICATED (JWT_TOKEN_INVALID): NumericDates must be finite.",
        _nan_times,
    ),
]


def run_known_bugs(workdir: Workdir, loop: LoopThread) -> list[dict[str, Any]]:
    return [bug.run(workdir.sub(bug.key), loop) for bug in KNOWN_BUGS]
