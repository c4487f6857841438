"""Request fuzzing with hypothesis, through every door: bodies, names, metadata and tokens.

Each attack draws cases from a hypothesis strategy, makes one call per case, and judges it
against the oracle and the upstream's call log (world.judge): nothing the policy denies may
reach the upstream or answer OK, the upstream must see the caller's real identity, and on
the gRPC door the status must be the one the oracle predicts.
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from gateway.reference_upstream.seed import (
    ACME_PROD_EU,
    ACME_PROD_US,
    ACME_STAGING_US,
    DONE_OPERATION,
    GLOBEX_OPERATION,
    GLOBEX_US,
    STAGING_OPERATION,
    STUCK_OPERATION,
    SUPPORT_TIER1_VIEW,
    TIER1_OPERATION,
    TIER2_OPERATION,
)
from gateway.routing import METHODS_BY_PATH, SERVICE_PREFIX
from hardening.doors import (
    CLIENT_REFUSED,
    Answer,
    GrpcDoor,
    RestDoor,
    request_body,
    rest_meaning,
)
from hardening.oracle import (
    INVALID,
    UNIMPLEMENTED,
    Expectation,
    caller_of,
    method_path,
    table_cases,
    who_claims,
)
from hardening.tokens import (
    ALG_ATTACKS,
    CLAIM_ATTACKS,
    HEADER_ATTACKS,
    HUGE_SIZES,
    SEGMENT_SHAPES,
    Forge,
    Forged,
)
from hardening.world import Violation, World, judge

LISTENER_LIMIT = 64 * 1024  # max_metadata_bytes in the config
SAFE_METADATA = 56 * 1024  # below this the chain must answer (HPACK overhead aside)
UPSTREAM_SOFT_LIMIT = 8 * 1024  # grpc's default max_metadata_size, the reference upstream's


@dataclass
class AttackResult:
    """One attack through one door: what was tried and what went wrong."""

    attack: str
    door: str
    cases: int = 0
    calls: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    families: Counter[str] = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        kinds = Counter(v.kind for v in self.violations)
        return {
            "attack": self.attack,
            "door": self.door,
            "cases": self.cases,
            "calls": self.calls,
            "outcomes": dict(self.outcomes.most_common()),
            "families": dict(self.families.most_common()),
            "violations": dict(kinds),
            "violation_examples": [v.as_dict() for v in _distinct(self.violations)[:12]],
            "seconds": round(self.seconds, 2),
            "note": self.note,
        }


def _distinct(violations: list[Violation]) -> list[Violation]:
    seen: set[tuple[str, str]] = set()
    kept = []
    for v in violations:
        key = (v.kind, v.detail[:80])
        if key not in seen:
            seen.add(key)
            kept.append(v)
    return kept


# -- inputs


def callers() -> list[dict[str, Any]]:
    """The table's distinct callers, as the claims their tokens add to the defaults."""
    found: dict[str, dict[str, Any]] = {}
    for _, who, *_ in table_cases():
        found.setdefault(repr(who), who.claims())
    return list(found.values())


RESOURCES = [
    DONE_OPERATION,
    STUCK_OPERATION,
    STAGING_OPERATION,
    GLOBEX_OPERATION,
    TIER1_OPERATION,
    TIER2_OPERATION,
    ACME_PROD_US,
    ACME_PROD_EU,
    ACME_STAGING_US,
    GLOBEX_US,
    SUPPORT_TIER1_VIEW,
]
ROUTED = [method_path(short) for short in ("get", "list", "cancel")]
GRPC_METHODS = (
    ROUTED * 4
    + [m for m in METHODS_BY_PATH]
    + [
        f"{SERVICE_PREFIX}Pause",
        f"{SERVICE_PREFIX}getOperation",
        "/google.longrunning.operations/GetOperation",
        f"{SERVICE_PREFIX}GetOperation/extra",
        f"{SERVICE_PREFIX}",
        "/x",
        "/google.longrunning.Operations.GetOperation",
    ]
)
SHORTS = ["get", "list", "cancel"] * 3 + ["delete", "wait"]
FRAGMENTS = [
    "..", ".", "", "%2F", "%2e%2e", "%00", "\x00", "\\", "/", "//", "\uff0f", "\u2215",
    "\u200b", "\u202e", "é", "\ud800", " ", "\t", "\n", "*", "?", "#", ";", ":cancel",
    "operations", "authorizedViewSets", "projects", "acme-prod", "ACME-PROD", "\u0430cme-prod",
    "~", "$", "{name}", "../../projects/globex-analytics",
]  # fmt: skip


def _mutate_name(base: str, edits: list[tuple[int, int, int]]) -> str:
    """Apply (kind, where, fragment) edits to a real name's segments."""
    parts = base.split("/")
    for kind, where, which in edits:
        fragment = FRAGMENTS[which % len(FRAGMENTS)]
        index = where % (len(parts) + 1)
        if kind % 4 == 0:
            parts.insert(index, fragment)
        elif kind % 4 == 1 and parts:
            parts[index % len(parts)] = fragment
        elif kind % 4 == 2 and parts:
            target = index % len(parts)
            parts[target] = parts[target] + fragment
        elif parts:
            del parts[index % len(parts)]
    return "/".join(parts)


def names() -> st.SearchStrategy[str]:
    edits = st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 12), st.integers(0, 99)), max_size=4
    )
    return st.one_of(
        st.sampled_from(RESOURCES),
        st.builds(_mutate_name, st.sampled_from(RESOURCES), edits),
        st.text(max_size=60),
        st.builds(
            lambda base, n: f"{base}/operations/{'9' * n}",
            st.sampled_from([ACME_PROD_US, ACME_STAGING_US]),
            st.integers(980, 1100),
        ),
        st.sampled_from([f"//contactcenterinsights.googleapis.com/{r}" for r in RESOURCES]),
        st.sampled_from([r.replace("/", "\\") for r in RESOURCES] + [r + "/" for r in RESOURCES]),
    )


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def name_field(method: str, data: bytes) -> bytes:
    """The request's `name` field holding exactly these bytes (any bytes, valid UTF-8 or not)."""
    known = METHODS_BY_PATH.get(method, METHODS_BY_PATH[f"{SERVICE_PREFIX}GetOperation"])
    number = known.request_type.DESCRIPTOR.fields_by_name["name"].number
    return varint(number << 3 | 2) + varint(len(data)) + data


def _encode(name: str) -> bytes:
    return name.encode("utf-8", "surrogatepass")


def bodies(method: str, big: int) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, and near-valid requests built to confuse a parser."""
    named = st.builds(lambda n: name_field(method, _encode(n)), names())
    return st.one_of(
        st.binary(max_size=300),
        named,
        st.builds(lambda a, b: a + b, named, st.binary(max_size=40)),  # trailing junk
        st.builds(
            lambda first, last: (
                name_field(method, _encode(first)) + name_field(method, _encode(last))
            ),
            st.sampled_from(RESOURCES),
            st.sampled_from(RESOURCES),
        ),  # two names: the last one wins, for the gateway and the upstream alike
        st.builds(lambda raw: name_field(method, raw), st.binary(max_size=80)),  # not UTF-8
        st.sampled_from(
            [
                b"\x08\x96\x01",  # field 1 as a varint
                b"\x0d\x00\x00\x00\x00",  # as fixed32
                b"\x0b\x0c",  # as an (empty) group
                b"\x0a\xff\xff\xff\xff\x0f" + b"abc",  # length past the end
                b"\x0a",  # truncated tag
                b"\x0a\x80",  # truncated length
                b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # overlong tag varint
                b"\x00",  # field 0
                b"\xfa\xff\xff\xff\x0f\x00",  # field 2^29-1, zero length
                b"\x12\x02\x08\x01" + name_field(method, _encode(DONE_OPERATION)),  # nested junk
            ]
        ),
        st.builds(lambda n: name_field(method, b"a" * n), st.integers(1025, max(1026, big))),  # big
    )


# -- hypothesis, run as a plain loop


def run_cases(
    strategy: st.SearchStrategy[Any], examples: int, seed: int, one: Callable[[Any], None]
) -> None:
    """Feed `examples` cases from `strategy` to `one`; nothing is raised, so nothing shrinks."""

    @hypothesis_seed(seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )
    @given(strategy)
    def prop(case: Any) -> None:
        one(case)

    prop()


def _call_counted(
    world: World, result: AttackResult, make: Callable[[], Answer]
) -> tuple[Answer, list[Any]]:
    before = len(world.upstream_calls())
    answer = world.note(make())
    reached = world.upstream_calls()[before:]
    result.calls += 1
    result.outcomes[answer.code] += 1
    return answer, reached


def _unaudited(door: str, answer: Answer, expected_answer: bool) -> list[Violation]:
    if expected_answer and not answer.answered and answer.code != CLIENT_REFUSED:
        return [Violation("unanswered", door, f"the chain never answered: {answer}")]
    return []


# -- the attacks


def attack_bodies(world: World, door_name: str, examples: int, seed: int, big: int) -> AttackResult:
    result = AttackResult("request-bodies", door_name)
    door = world.doors[door_name]
    whos = callers()
    started = time.monotonic()
    if isinstance(door, GrpcDoor):
        strategy = st.sampled_from(GRPC_METHODS).flatmap(
            lambda m: st.tuples(st.just(m), bodies(m, big), st.integers(0, len(whos) - 1))
        )

        def one(case: tuple[str, bytes, int]) -> None:
            method, body, who_index = case
            claims = who_claims_of(whos[who_index])
            token = world.token(whos[who_index])
            expected = world.oracle.decide_bytes(claims, method, body)
            if method not in METHODS_BY_PATH:
                expected = Expectation(UNIMPLEMENTED, method, why="unknown method")
            answer, reached = _call_counted(
                world,
                result,
                lambda: door.call(method, body, [("authorization", f"Bearer {token}")]),
            )
            result.cases += 1
            result.families[method.rsplit("/", 1)[-1][:24]] += 1
            oversized = len(body) > 4 * 1024 * 1024
            result.violations += judge(
                world, door_name, claims, expected, answer, reached, strict_status=not oversized
            )
            result.violations += _unaudited(door_name, answer, not oversized)

        run_cases(strategy, examples, seed, one)
    else:
        assert isinstance(door, RestDoor)
        rest_cases = st.tuples(
            st.sampled_from(["get", "list", "cancel", "bogus"]),
            st.sampled_from(RESOURCES),
            st.one_of(st.binary(max_size=200), st.sampled_from(JSON_BODIES)),
            st.one_of(st.just(b""), st.binary(max_size=60), st.sampled_from(QUERIES)),
            st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
            st.integers(0, len(whos) - 1),
        )

        def one_rest(case: tuple[str, str, bytes, bytes, str, int]) -> None:
            short, name, body, query, verb, who_index = case
            claims = who_claims_of(whos[who_index])
            token = world.token(whos[who_index])
            templates = {
                "get": b"/v1/%s",
                "list": b"/v1/%s/operations",
                "cancel": b"/v1/%s:cancel",
                "bogus": b"/v1/%s:bogus",
            }
            target = templates[short] % _encode(name)
            if query:
                target += b"?" + bytes(b if 0x21 <= b < 0x7F else 0x5F for b in query)
            answer, reached = _call_counted(
                world,
                result,
                lambda: door.request(verb, target, [("Authorization", f"Bearer {token}")], body),
            )
            result.cases += 1
            result.families[f"{verb} {short}"] += 1
            result.violations += judge(
                world, door_name, claims, None, answer, reached, strict_status=False
            )

        run_cases(rest_cases, examples, seed, one_rest)
    result.seconds = time.monotonic() - started
    return result


JSON_BODIES = [
    b"{}",
    b'{"name": "projects/globex-analytics/locations/us-central1/operations/1"}',
    b'{"name": 5}',
    b"[]",
    b"null",
    b'{"unknown": 1}',
    b'{"name": "' + b"\\u0000" * 10 + b'"}',
    b"{" * 5000,
    b'{"a":' * 2000 + b"1" + b"}" * 2000,
    b"\xff\xfe{}",
    b'{"name": "x", "name": "y"}',
]
QUERIES = [
    b"filter=done=true",
    b"pageSize=-1",
    b"pageSize=99999999999999999999",
    b"pageToken=%FF%FE",
    b"name=projects/globex-analytics/locations/us-central1",
    b"alt=json&prettyPrint=false",
    b"$.xgafv=2",
    b"filter=" + b"a" * 5000,
    b"returnPartialSuccess=maybe",
    b"pageSize=1&pageSize=2",
]


def who_claims_of(who: dict[str, Any]) -> dict[str, Any]:
    """Full claims for a table caller's extra claims (as World.token mints them)."""

    class _Who:
        def claims(self) -> dict[str, Any]:
            return who

    return who_claims(_Who())


def attack_names(world: World, door_name: str, examples: int, seed: int) -> AttackResult:
    result = AttackResult("resource-names", door_name)
    door = world.doors[door_name]
    whos = callers()
    started = time.monotonic()
    strategy = st.tuples(st.sampled_from(SHORTS), names(), st.integers(0, len(whos) - 1))

    def one(case: tuple[str, str, int]) -> None:
        short, name, who_index = case
        claims = who_claims_of(whos[who_index])
        token = world.token(whos[who_index])
        method = method_path(short)
        if isinstance(door, GrpcDoor):
            body = name_field(method, _encode(name))
            expected = world.oracle.decide_bytes(claims, method, body)
            answer, reached = _call_counted(
                world,
                result,
                lambda: door.call(method, body, [("authorization", f"Bearer {token}")]),
            )
            result.violations += judge(world, door_name, claims, expected, answer, reached)
            result.violations += _unaudited(door_name, answer, True)
        else:
            assert isinstance(door, RestDoor)
            meant, meant_name = rest_meaning(short, name)
            expected = world.oracle.decide(claims, method_path(meant), meant_name)
            answer, reached = _call_counted(
                world, result, lambda: door.operation(short, name, token)
            )
            result.violations += judge(
                world, door_name, claims, expected, answer, reached, strict_status=False
            )
            if answer.answered and not expected.allowed and answer.code == "OK":
                result.violations.append(Violation("wrongly_allowed", door_name, repr(name)))
        result.cases += 1
        result.families[_name_family(name, expected)] += 1

    run_cases(strategy, examples, seed, one)
    result.seconds = time.monotonic() - started
    return result


def _name_family(name: str, expected: Expectation) -> str:
    if expected.verdict == INVALID:
        return f"invalid: {expected.why}"
    return expected.verdict


# -- metadata

AUTH_VARIANTS = (
    "one", "scheme-upper", "scheme-mixed", "double-space", "trailing-space", "two-same",
    "two-principals", "comma-joined", "no-scheme", "basic", "empty", "bare-bearer",
    "other-header-only", "key-upper", "key-mixed", "none",
)  # fmt: skip
MUST_REFUSE = {
    "two-same", "two-principals", "comma-joined", "no-scheme", "basic", "empty", "bare-bearer",
    "other-header-only", "none",
}  # fmt: skip
MAY_REFUSE = {"double-space", "trailing-space"}


def _auth(variant: str, token: str, other: str) -> list[tuple[str, str]]:
    table: dict[str, list[tuple[str, str]]] = {
        "one": [("authorization", f"Bearer {token}")],
        "scheme-upper": [("authorization", f"BEARER {token}")],
        "scheme-mixed": [("authorization", f"bEaReR {token}")],
        "double-space": [("authorization", f"Bearer  {token}")],
        "trailing-space": [("authorization", f"Bearer {token} ")],
        "two-same": [("authorization", f"Bearer {token}")] * 2,
        "two-principals": [
            ("authorization", f"Bearer {other}"),
            ("authorization", f"Bearer {token}"),
        ],
        "comma-joined": [("authorization", f"Bearer {token}, Bearer {other}")],
        "no-scheme": [("authorization", token)],
        "basic": [("authorization", "Basic YWxpY2U6c2VjcmV0")],
        "empty": [("authorization", "")],
        "bare-bearer": [("authorization", "Bearer")],
        "other-header-only": [("x-authorization", f"Bearer {token}")],
        "key-upper": [("AUTHORIZATION", f"Bearer {token}")],
        "key-mixed": [("AuThOrIzAtIoN", f"Bearer {token}")],
        "none": [],
    }
    return table[variant]


header_keys = st.one_of(
    st.from_regex(r"\A[a-z0-9][a-z0-9_.-]{0,24}\Z"),
    st.sampled_from(
        [
            "x-opsgate-principal",
            "x-goog-user-project",
            "traceparent",
            "x-cloud-trace-context",
            "x-request-id",
            "user-agent",
            "content-type",
            "te",
            "grpc-timeout",
            "grpc-status",
            "grpc-status-details-bin",
            "host",
        ]
    ),
)
header_values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80),
    st.sampled_from(["user:alice@acme.example", "00-" + "a" * 32 + "-" + "b" * 16 + "-01"]),
)
# At most one header a gRPC client would refuse (non-ASCII, controls, upper-case keys).
odd_headers = st.lists(
    st.tuples(
        st.one_of(header_keys, st.sampled_from(["X-Upper", "Host", "AUTHORIZATION"])),
        st.text(max_size=20),
    ),
    max_size=1,
)
metadata_cases = st.tuples(
    st.sampled_from(AUTH_VARIANTS),
    st.builds(
        lambda a, b: a + b,
        st.lists(st.tuples(header_keys, header_values), max_size=12),
        odd_headers,
    ),
    st.lists(st.tuples(st.from_regex(r"\A[a-z]{1,12}-bin\Z"), st.binary(max_size=200)), max_size=4),
    st.one_of(st.just(0), st.integers(1, 600)),  # many small headers
    st.one_of(
        st.just(0), st.sampled_from([1024, 8 * 1024, 16 * 1024, 48 * 1024, 63 * 1024, 66 * 1024])
    ),  # one huge header
    st.booleans(),  # spoof the identity header
    st.integers(0, 10_000),  # which caller and target
)


def attack_metadata(world: World, door_name: str, examples: int, seed: int) -> AttackResult:
    result = AttackResult("metadata", door_name)
    door = world.doors[door_name]
    whos = callers()
    targets = _targets()
    other = world.token({"email": "mallory@contractor.example"})
    started = time.monotonic()

    def one(case: Any) -> None:
        variant, extra, binary, many, huge, spoof, pick = case
        who = whos[pick % len(whos)]
        claims = who_claims_of(who)
        short, name = targets[pick % len(targets)]
        token = world.token(who)
        metadata: list[tuple[str, Any]] = list(_auth(variant, token, other))
        metadata += list(extra) + list(binary)
        metadata += [(f"x-many-{i % 7}", "v" * 16) for i in range(many)]
        if huge:
            metadata.append(("x-huge", "h" * huge))
        if spoof:
            metadata.append(("x-opsgate-principal", "user:alice@acme.example"))
        size = sum(len(k) + len(v) + 32 for k, v in metadata)
        method = method_path(short)
        if isinstance(door, GrpcDoor):
            answer, reached = _call_counted(
                world,
                result,
                lambda: door.call(method, request_body(short, name), metadata),
            )
        else:
            assert isinstance(door, RestDoor)
            headers: list[tuple[str | bytes, str | bytes]] = [
                (k, _rest_value(k, v)) for k, v in metadata
            ]
            answer, reached = _call_counted(
                world, result, lambda: door.operation(short, name, None, headers)
            )
        result.cases += 1
        result.families[variant] += 1
        expected = world.oracle.decide(claims, method, name)
        auth = [v for k, v in metadata if k.lower() == "authorization"]
        authenticates = variant not in MUST_REFUSE and len(auth) == 1
        if isinstance(door, GrpcDoor) and variant in ("key-upper", "key-mixed"):
            authenticates = False  # gRPC keys are lower case; the client refuses these
        forwarded = sum(
            len(k) + len(v) + 32
            for k, v in metadata
            if k.lower() not in ("authorization", "x-opsgate-principal")
        )
        if authenticates:
            result.violations += judge(
                world, door_name, claims, expected, answer, reached, strict_status=False
            )
            fine = answer.code in (_code(expected, reached), CLIENT_REFUSED) or (
                variant in MAY_REFUSE and answer.code == "UNAUTHENTICATED"
            )
            # The caller's metadata is relayed: an upstream with gRPC's default limits (8 KiB
            # soft, 16 KiB hard) refuses big header sets itself, and that status is relayed.
            if expected.allowed and not reached and answer.code == "RESOURCE_EXHAUSTED":
                fine = fine or forwarded > UPSTREAM_SOFT_LIMIT
                result.families["relayed upstream metadata refusal"] += 1
        else:
            result.violations += judge(world, door_name, None, None, answer, reached)
            fine = answer.code in ("UNAUTHENTICATED", CLIENT_REFUSED)
        transport_refused = not answer.answered and size >= SAFE_METADATA
        if isinstance(door, GrpcDoor) and not fine and not transport_refused:
            result.violations.append(
                Violation(
                    "status",
                    door_name,
                    f"{variant} (+{len(extra)} headers, {many} small, {huge} B huge, "
                    f"~{size} B): got {answer.code} {answer.reason} {answer.message[:100]!r}",
                )
            )
        if isinstance(door, GrpcDoor) and size < SAFE_METADATA:
            result.violations += _unaudited(door_name, answer, True)
        if answer.answered and size > LISTENER_LIMIT + 4096 and isinstance(door, GrpcDoor):
            result.violations.append(
                Violation("limit", door_name, f"~{size} B of metadata got past the listener")
            )

    run_cases(metadata_cases, examples, seed, one)
    result.seconds = time.monotonic() - started
    return result


def _rest_value(key: str, value: str | bytes) -> str:
    """A metadata value as an HTTP header value: -bin values base64, CR/LF escaped."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode() if key.endswith("-bin") else value.decode("latin-1")
    return value.replace("\r", "%0D").replace("\n", "%0A")


def _code(expected: Expectation, reached: list[Any]) -> str:
    if expected.allowed:
        return (
            "OK"
            if reached and reached[0].outcome == "ok"
            else (reached[0].outcome if reached else "<upstream call>")
        )
    return {"deny": "PERMISSION_DENIED", "invalid": "INVALID_ARGUMENT"}.get(
        expected.verdict, "UNIMPLEMENTED"
    )


def _targets() -> list[tuple[str, str]]:
    """(method, name) pairs the profile routes, on the seeded resources."""
    found = []
    for _, _, method, resource, expected in table_cases():
        if expected in ("OK", "PERMISSION_DENIED", "NOT_FOUND") and method in (
            "get",
            "list",
            "cancel",
        ):
            found.append((method, resource))
    return sorted(set(found))


# -- tokens

token_cases = st.tuples(
    st.one_of(
        st.tuples(st.just("valid"), st.booleans()),
        st.tuples(
            st.just("bitflip-text"), st.integers(0, 2), st.integers(0, 10**6), st.integers(0, 6)
        ),
        st.tuples(
            st.just("bitflip-bytes"), st.integers(0, 2), st.integers(0, 10**6), st.integers(0, 7)
        ),
        st.tuples(st.just("segments"), st.sampled_from(SEGMENT_SHAPES)),
        st.tuples(st.just("header"), st.sampled_from(HEADER_ATTACKS)),
        st.tuples(st.just("alg"), st.sampled_from(ALG_ATTACKS)),
        st.tuples(st.just("claims"), st.sampled_from(CLAIM_ATTACKS)),
        st.tuples(
            st.just("non-ascii"),
            st.integers(0, 10**6),
            st.characters(min_codepoint=0x80, max_codepoint=0x10FFFF, exclude_categories=["Cs"]),
        ),
        st.tuples(st.just("huge"), st.sampled_from(HUGE_SIZES)),
        st.tuples(
            st.just("junk"),
            st.one_of(
                st.text(
                    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=300
                ),
                st.sampled_from(["a" * 16_385, "x.y.z", "..", "ya29.junk", "e30.e30.e30"]),
            ),
        ),
    ),
    st.integers(0, 10_000),
)


def forge(forger: Forge, family: tuple[Any, ...], who: dict[str, Any]) -> Forged:
    kind = family[0]
    if kind == "valid":
        return forger.valid(who, use_ec=family[1])
    if kind == "bitflip-text":
        return forger.bitflip_text(who, *family[1:])
    if kind == "bitflip-bytes":
        return forger.bitflip_bytes(who, *family[1:])
    if kind == "segments":
        return forger.segments(who, family[1])
    if kind == "header":
        return forger.header_attack(who, family[1])
    if kind == "alg":
        return forger.alg_attack(who, family[1])
    if kind == "claims":
        return forger.claim_attack(who, family[1])
    if kind == "non-ascii":
        return forger.non_ascii(who, family[1], family[2])
    if kind == "huge":
        return forger.huge(who, family[1])
    return forger.junk(family[1])


def attack_tokens(world: World, door_name: str, examples: int, seed: int) -> AttackResult:
    result = AttackResult("tokens", door_name)
    door = world.doors[door_name]
    whos = callers()
    targets = _targets()
    forger = Forge(world.keys)
    started = time.monotonic()

    def one(case: Any) -> None:
        family, pick = case
        who = whos[pick % len(whos)]
        short, name = targets[pick % len(targets)]
        forged = forge(forger, family, who)
        world.sent_tokens.add(forged.token)
        method = method_path(short)
        if isinstance(door, GrpcDoor):
            answer, reached = _call_counted(
                world,
                result,
                lambda: door.call(
                    method,
                    request_body(short, name),
                    [("authorization", f"Bearer {forged.token}")],
                ),
            )
        else:
            assert isinstance(door, RestDoor)
            safe = forged.token.replace("\r", "%0D").replace("\n", "%0A")
            answer, reached = _call_counted(
                world, result, lambda: door.operation(short, name, safe)
            )
        result.cases += 1
        result.families[forged.family.split("-")[0]] += 1
        result.violations += _judge_token(world, door_name, forged, method, name, answer, reached)

    run_cases(token_cases, examples, seed, one)
    result.seconds = time.monotonic() - started
    return result


def _judge_token(
    world: World,
    door_name: str,
    forged: Forged,
    method: str,
    name: str,
    answer: Answer,
    reached: list[Any],
) -> list[Violation]:
    found: list[Violation] = []
    label = f"{forged.family} ({len(forged.token)} chars)"
    if forged.accept_as is None:
        found += judge(world, door_name, None, None, answer, reached)
        refused = {"UNAUTHENTICATED", CLIENT_REFUSED, "TRANSPORT"} | (
            {"PERMISSION_DENIED"} if forged.scope_refusal else set()
        )
        if (
            answer.code not in refused
            and not answer.code.startswith("HTTP_")
            and (answer.answered or isinstance(world.doors[door_name], GrpcDoor))
            and not (not answer.answered and len(forged.token) > SAFE_METADATA)
        ):
            found.append(Violation("status", door_name, f"{label}: {answer.code} {answer.reason}"))
        wrong_reason = answer.reason != "ACCESS_TOKEN_SCOPE_INSUFFICIENT"
        if forged.scope_refusal and answer.code == "PERMISSION_DENIED" and wrong_reason:
            found.append(Violation("status", door_name, f"{label}: reason {answer.reason}"))
        return [Violation(v.kind, v.door, f"{label}: {v.detail}") for v in found]
    claims = forged.accept_as
    expected = world.oracle.decide(claims, method, name)
    found += judge(world, door_name, claims, expected, answer, reached, strict_status=False)
    if answer.code == "UNAUTHENTICATED" or answer.code == CLIENT_REFUSED:
        if not forged.may_refuse:
            found.append(Violation("status", door_name, f"{label}: a valid token was refused"))
        return [Violation(v.kind, v.door, f"{label}: {v.detail}") for v in found]
    if answer.answered and answer.code != _code(expected, reached):
        member = caller_of(claims).member
        found.append(
            Violation(
                "status",
                door_name,
                f"{label} as {member!r}: {answer.code} {answer.reason} "
                f"{answer.message[:80]!r}; oracle: {expected.verdict}",
            )
        )
    return [Violation(v.kind, v.door, f"{label}: {v.detail}") for v in found]


# -- raw HTTP/2 (the gRPC door, as no gRPC client would call it)

# "in-path": a token in the :path query string (KB-4's trigger: it must not reach the audit).
H2_AUTH = ("lower", "Upper", "UPPER", "two-principals", "lower+Upper-other", "none", "in-path")
H2_PATHS = (
    "exact", "query", "double-slash", "trailing-slash", "percent", "fragment", "upper",
    "no-slash", "empty", "star", "two-paths-cancel", "health",
)  # fmt: skip
H2_CONTENT = ("grpc", "grpc+proto", "grpc+json", "text/plain", "none", "two")
H2_FRAMING = (
    "one", "compressed-flag-no-encoding", "gzip", "length-too-long", "length-too-short",
    "two-messages", "none", "raw-body",
)  # fmt: skip
H2_EXTRA = (
    "none", "Spoof-Upper", "spoof-lower", "te-missing", "method-get", "timeout-junk",
    "timeout-zero", "Upper-custom", "dup-authority", "connection-header",
)  # fmt: skip

h2_cases = st.tuples(
    st.sampled_from(H2_AUTH),
    st.sampled_from(H2_PATHS),
    st.sampled_from(H2_CONTENT),
    st.sampled_from(H2_FRAMING),
    st.sampled_from(H2_EXTRA),
    st.integers(0, 10_000),
)


def _h2_request(
    world: World, case: tuple[str, str, str, str, str, int], whos: list[dict[str, Any]]
) -> tuple[list[tuple[bytes, bytes]], bytes, dict[str, Any] | None]:
    """Headers, DATA and the claims the call may authenticate as (None: must not)."""
    import gzip

    from hardening import h2raw

    auth, path_kind, content, framing, extra, pick = case
    who = whos[pick % len(whos)]
    short, name = _targets()[pick % len(_targets())]
    token = world.token(who)
    mallory = world.token({"email": "mallory@contractor.example"})
    method = method_path(short).encode()
    paths = {
        "exact": method,
        "query": method + b"?alt=json",
        "double-slash": b"/" + method,
        "trailing-slash": method + b"/",
        "percent": method.replace(b"/Get", b"/%47et").replace(b"/List", b"/%4Cist"),
        "fragment": method + b"#x",
        "upper": method.upper(),
        "no-slash": method[1:],
        "empty": b"",
        "star": b"*",
        "two-paths-cancel": method,
        "health": b"/grpc.health.v1.Health/Check",
    }
    headers = h2raw.base_headers(world.gateway.address, paths[path_kind], None)
    if path_kind == "two-paths-cancel":
        headers.insert(3, (b":path", method_path("cancel").encode()))
    claims: dict[str, Any] | None = who_claims_of(who)
    bearer = f"Bearer {token}".encode()
    if auth == "lower":
        headers.append((b"authorization", bearer))
    elif auth in ("Upper", "UPPER"):
        headers.append((b"Authorization" if auth == "Upper" else b"AUTHORIZATION", bearer))
    elif auth == "two-principals":
        headers += [(b"authorization", bearer), (b"authorization", f"Bearer {mallory}".encode())]
        claims = None
    elif auth == "lower+Upper-other":
        headers += [(b"authorization", bearer), (b"Authorization", f"Bearer {mallory}".encode())]
    elif auth == "in-path":
        headers[2] = (b":path", headers[2][1] + b"?access_token=" + token.encode())
        claims = None
    else:
        claims = None
    content_types = {
        "grpc": [b"application/grpc"],
        "grpc+proto": [b"application/grpc+proto"],
        "grpc+json": [b"application/grpc+json"],
        "text/plain": [b"text/plain"],
        "none": [],
        "two": [b"application/grpc", b"text/plain"],
    }
    headers = [h for h in headers if h[0] != b"content-type"]
    headers[4:4] = [(b"content-type", value) for value in content_types[content]]
    body = request_body(short, name)
    frames = {
        "one": h2raw.grpc_frame(body),
        "compressed-flag-no-encoding": h2raw.grpc_frame(body, compressed=True),
        "gzip": h2raw.grpc_frame(gzip.compress(body), compressed=True),
        "length-too-long": h2raw.grpc_frame(body, declared=len(body) + 50),
        "length-too-short": h2raw.grpc_frame(body, declared=max(0, len(body) - 3)),
        "two-messages": h2raw.grpc_frame(body) + h2raw.grpc_frame(body),
        "none": b"",
        "raw-body": body,
    }
    if framing == "gzip":
        headers.append((b"grpc-encoding", b"gzip"))
    extras: dict[str, list[tuple[bytes, bytes]]] = {
        "none": [],
        "Spoof-Upper": [(b"X-Opsgate-Principal", b"user:alice@acme.example")],
        "spoof-lower": [(b"x-opsgate-principal", b"user:alice@acme.example")],
        "te-missing": [],
        "method-get": [],
        "timeout-junk": [(b"grpc-timeout", b"abc")],
        "timeout-zero": [(b"grpc-timeout", b"0n")],
        "Upper-custom": [(b"X-Custom", b"v")],
        "dup-authority": [(b":authority", b"evil.example")],
        "connection-header": [(b"connection", b"keep-alive")],
    }
    headers += extras[extra]
    if extra == "te-missing":
        headers = [h for h in headers if h[0] != b"te"]
    if extra == "method-get":
        headers[0] = (b":method", b"GET")
    return headers, frames[framing], claims


def attack_h2(world: World, examples: int, seed: int) -> AttackResult:
    from hardening import h2raw

    result = AttackResult("raw-http2", "grpc")
    if not h2raw.AVAILABLE:
        result.note = "skipped: the h2 package is not installed (pip install -e '.[hardening]')"
        return result
    whos = callers()
    started = time.monotonic()

    def one(case: tuple[str, str, str, str, str, int]) -> None:
        headers, data, claims = _h2_request(world, case, whos)
        answer, reached = _call_counted(
            world, result, lambda: h2raw.call(world.gateway.address, headers, data, timeout=0.5)
        )
        result.cases += 1
        result.families[f"auth:{case[0]}"] += 1
        if case[1] == "health":
            # Health checks bypass the chain by design (README): any answer, never upstream.
            if reached:
                result.violations.append(
                    Violation("wrongly_allowed", "grpc/h2", f"{case}: health reached upstream")
                )
            return
        found = judge(world, "grpc", claims, None, answer, reached, strict_status=False)
        result.violations += [Violation(v.kind, "grpc/h2", f"{case}: {v.detail}") for v in found]

    run_cases(h2_cases, examples, seed, one)
    result.seconds = time.monotonic() - started
    return result
