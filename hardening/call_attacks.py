"""Issue 15's call classes through a gateway process: aliasing, unverified, smuggling, deadlines."""

from __future__ import annotations

import base64
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import yaml

from hardening.doors import Answer, RestSession
from hardening.policy_attacks import ClassResult
from hardening.process_world import ALICE, ProcessWorld, unique
from hardening.world import Violation

VIEWER = "roles/contactcenterinsights.viewer"
GET = "contactcenterinsights.operations.get"
# What each alias-* project grants, and to whom (the canonical ASCII identities).
ALIAS_TARGETS = [
    ("user", "kim@kiosk.example", "alias-user"),
    ("user", "jess@kiosk.example", "alias-user"),
    ("group", "ski-team@kiosk.example", "alias-group"),
    ("domain", "kiosk.example", "alias-domain"),
    ("serviceAccount", "sync@kiosk-prod.iam.gserviceaccount.com", "alias-sa"),
]
VOUCHING_ISSUER = "https://vouching.hardening.test"  # configured to vouch for emails and hd


def process_policy(extra: dict[str, list[dict[str, Any]]] | None = None) -> str:
    """The policy of the call classes' gateway (and `extra` allow/deny entries)."""

    def grant(project: str, *members: str) -> dict[str, Any]:
        return {
            "resource": f"projects/{project}",
            "bindings": [{"role": VIEWER, "members": list(members)}],
        }

    allow = [
        grant("acme-prod", "user:alice@acme.example"),  # the known-good call
        grant("hdr", "user:alice@acme.example"),
        grant("slow", "user:alice@acme.example"),
        grant("alias-user", "user:kim@kiosk.example", "user:jess@kiosk.example"),
        grant("alias-group", "group:ski-team@kiosk.example"),
        grant("alias-domain", "domain:kiosk.example"),
        grant("alias-sa", "serviceAccount:sync@kiosk-prod.iam.gserviceaccount.com"),
        grant("alias-deny", "allAuthenticatedUsers"),
        grant("verify-user", "user:vic@verify.example"),
        grant("verify-domain", "domain:verify.example"),
    ]
    rule = {
        "deniedPrincipals": ["user:kim@kiosk.example", "group:ski-team@kiosk.example"],
        "deniedPermissions": [GET],
    }
    deny = [{"resource": "projects/alias-deny", "rules": [rule]}]
    allow += (extra or {}).get("allow", [])
    deny += (extra or {}).get("deny", [])
    return str(yaml.safe_dump({"allow": allow, "deny": deny}, sort_keys=False, width=4096))


def vouching_issuer(jwks_url: str) -> list[dict[str, Any]]:
    """A second issuer that vouches for its emails and its hd, if this tree's config has the
    options (issue 15's fix adds them); else none."""
    from gateway.authn.settings import IssuerConfig

    fields = getattr(IssuerConfig, "__dataclass_fields__", {})
    if not {"emails_verified", "trust_hosted_domain"} <= set(fields):
        return []
    from hardening.env import AUDIENCE

    entry = {"issuer": VOUCHING_ISSUER, "audiences": [AUDIENCE], "jwks_uri": jwks_url}
    return [{**entry, "emails_verified": True, "trust_hosted_domain": True}]


def granted(world: ProcessWorld, name: str, answer: Answer) -> bool:
    """The call was let through: the upstream was asked for this (unique) name, or it is OK."""
    return bool(world.reached(name)) or answer.code == "OK"


class Caller:
    """Numbered unique names, a door per call, for one class."""

    def __init__(self, world: ProcessWorld, rng: random.Random, result: ClassResult) -> None:
        self.world, self.rng, self.result = world, rng, result
        self.serial = 0
        self.outcomes: Counter[str] = Counter()

    def get(self, project: str, who: dict[str, Any] | str) -> tuple[bool, Answer, str]:
        self.serial += 1
        name = unique(f"projects/{project}", self.serial, self.rng.randrange(10**6))
        door = self.rng.choice(self.world.doors())
        token = who if isinstance(who, str) else self.world.token(who)
        answer = self.world.call(door, name, token)
        self.result.calls += 1
        self.outcomes[answer.code] += 1
        return granted(self.world, name, answer), answer, door


# -- class 4: identities that look alike, and ASCII case ----------------------------------------

ID_LOOKALIKES = {
    "k": ["\u212a", "\uff4b", "\u0138", "\u03ba"],  # Kelvin sign, fullwidth, kra, kappa
    "s": ["\u017f", "\uff53", "\u0455"],  # long s, fullwidth, Cyrillic dze
    "i": ["\u0130", "\u0131", "\uff49", "\u0456"],  # dotted I, dotless i, fullwidth, Cyrillic
    "e": ["\u0435", "\uff45", "\u00e9"],
    "o": ["\u03bf", "\u043e", "\uff4f"],
    "a": ["\u0430", "\uff41"],
    "m": ["\uff4d"],
    "y": ["\u0443"],
    "c": ["\u0441", "\u216d"],  # Cyrillic es, Roman numeral one hundred
}


def lookalike(rng: random.Random, text: str) -> tuple[str, str]:
    """`text` with at least one character replaced by a Unicode look-alike (or 'ss' by 'ß'),
    some others in ASCII upper case; and the family. Half are pure case-folding spellings
    (only Kelvin sign for k, long s for s): Unicode case folding maps them onto the member."""
    spots = [i for i, c in enumerate(text) if c in ID_LOOKALIKES]
    folding = [i for i in spots if text[i] in "ks"]
    pure = bool(folding) and rng.random() < 0.5
    pool = folding if pure else spots
    chosen = set(rng.sample(pool, rng.randint(1, min(3, len(pool)))))
    out = []
    for i, char in enumerate(text):
        if i in chosen:
            choices = ID_LOOKALIKES[char]
            out.append(choices[0] if pure else rng.choice(choices))
        else:
            out.append(char.upper() if char.isalpha() and rng.random() < 0.2 else char)
    if "ss" in text and not pure and rng.random() < 0.3:
        return text.replace("ss", rng.choice(["ß", "\u1e9e"])), "sharp s"
    return "".join(out), "case folding" if pure else "look-alike"


def ascii_case(rng: random.Random, text: str) -> str:
    """`text` with a random ASCII case (at least one letter upper case)."""
    out = [c.upper() if c.isalpha() and rng.random() < 0.5 else c for c in text]
    if "".join(out) == text:
        out[0] = out[0].upper()
    return "".join(out)


def _claims_for(kind: str, identity: str) -> dict[str, Any]:
    if kind == "group":
        return {"email": "outsider@elsewhere.example", "email_verified": True, "groups": [identity]}
    if kind == "domain":
        return {"email": f"anyone@{identity}", "email_verified": True}
    return {"email": identity, "email_verified": True}


def attack_aliasing(world: ProcessWorld, cases: int, seed: int) -> ClassResult:
    """Class 4: a token whose email, group or domain is a look-alike of a granted identity must
    not get its grant; an ASCII case variant of a denied identity must stay denied."""
    started = time.monotonic()
    rng = random.Random(seed)
    result = ClassResult(
        4,
        "Identities compare in one canonical form",
        "tokens whose email, groups claim or email domain is a Unicode look-alike of a granted "
        "member (Kelvin sign, long s, dotted/dotless i, fullwidth, Cyrillic, ß for ss) or an "
        "ASCII case variant of a denied one",
    )
    caller = Caller(world, rng, result)
    controls = variants_granted = variants = 0
    for kind, identity, project in ALIAS_TARGETS:  # the ASCII identities get their grants
        controls += caller.get(project, _claims_for(kind, identity))[0]
    for _ in range(cases):
        kind, identity, project = rng.choice(ALIAS_TARGETS)
        result.cases += 1
        if rng.random() < 0.3:  # the deny rule names user:kim@ and group:ski-team@
            kind = rng.choice(["user", "group"])
            spelled = ascii_case(
                rng, "kim@kiosk.example" if kind == "user" else "ski-team@kiosk.example"
            )
            result.families[f"{kind} ASCII case, deny rule"] += 1
            let_in, answer, door = caller.get("alias-deny", _claims_for(kind, spelled))
            if let_in:
                result.violations.append(
                    Violation(
                        "case_not_denied", door, f"{kind} {spelled!r} not denied: {answer.code}"
                    )
                )
            if kind == "user":
                variants += 1
                variants_granted += caller.get("alias-user", _claims_for(kind, spelled))[0]
            continue
        spelled, family = lookalike(rng, identity)
        result.families[f"{kind} {family}"] += 1
        let_in, answer, door = caller.get(project, _claims_for(kind, spelled))
        if let_in:
            result.violations.append(
                Violation("aliased", door, f"{kind} {spelled!a} got {kind}:{identity}'s grant")
            )
    result.figures["ASCII controls granted"] = f"{controls}/{len(ALIAS_TARGETS)}"
    result.figures["ASCII case variants granted the user's grant"] = (
        f"{variants_granted}/{variants}"
    )
    result.figures["answers"] = dict(caller.outcomes.most_common(4))
    if controls < len(ALIAS_TARGETS):
        result.generator_errors.append("an ASCII identity was not granted its own grant")
    result.seconds = time.monotonic() - started
    return result


# -- class 5: unverified emails and untrusted hd --------------------------------------------------

UNVERIFIED: dict[str, tuple[str, dict[str, Any]]] = {
    "no email_verified": ("verify-user", {"email": "vic@verify.example", "email_verified": None}),
    "email_verified false": (
        "verify-user",
        {"email": "vic@verify.example", "email_verified": False},
    ),
    'email_verified "true"': (
        "verify-user",
        {"email": "vic@verify.example", "email_verified": "true"},
    ),
    "no email_verified, domain": (
        "verify-domain",
        {"email": "anyone@verify.example", "email_verified": None},
    ),
    "email_verified false, domain": (
        "verify-domain",
        {"email": "anyone@verify.example", "email_verified": False},
    ),
    "hd from this issuer": (
        "verify-domain",
        {"email": "other@elsewhere.example", "email_verified": True, "hd": "verify.example"},
    ),
    "hd, no email_verified": (
        "verify-domain",
        {"email": "other@elsewhere.example", "email_verified": None, "hd": "verify.example"},
    ),
}


def attack_unverified(world: ProcessWorld, cases: int, seed: int, vouching: bool) -> ClassResult:
    """Class 5: an email not verified, and `hd` from an issuer not trusted for it, must not get
    what a verified email or a domain: binding grants."""
    started = time.monotonic()
    rng = random.Random(seed)
    result = ClassResult(
        5,
        "Unverified means unverified",
        "tokens from the suite's (non-Google) issuer with no email_verified, false, a string, "
        "and hd claims, against user: and domain: grants",
    )
    caller = Caller(world, rng, result)
    controls = int(caller.get("verify-user", {"email": "vic@verify.example"})[0])
    controls += caller.get("verify-domain", {"email": "anyone@verify.example"})[0]
    for _ in range(cases):
        family = rng.choice(sorted(UNVERIFIED))
        project, who = UNVERIFIED[family]
        who = {
            **who,
            "email": ascii_case(rng, who["email"]) if rng.random() < 0.2 else who["email"],
        }
        result.cases += 1
        result.families[family] += 1
        let_in, _, door = caller.get(project, who)
        if let_in:
            result.violations.append(
                Violation("unverified_granted", door, f"{family}: {who} got projects/{project}")
            )
    result.figures["verified controls granted"] = f"{controls}/2"
    if vouching:  # the issuer configured to vouch gets what the default one must not
        vouched = sum(
            caller.get(project, world.token_from(VOUCHING_ISSUER, who))[0]
            for project, who in (UNVERIFIED["no email_verified"], UNVERIFIED["hd from this issuer"])
        )
        result.figures["vouching issuer granted"] = f"{vouched}/2"
    else:
        result.notes.append("no per-issuer emails_verified / trust_hosted_domain options in config")
    result.figures["answers"] = dict(caller.outcomes.most_common(4))
    result.seconds = time.monotonic() - started
    return result


# -- class 6: variants of the headers the gateway sets ------------------------------------------

GATEWAY_HEADERS = ("x-opsgate-principal", "x-request-id")


def header_variants(base: str, door: str) -> list[str]:
    """Spellings some server or proxy may fold into `base`: `_` for `-`, `-bin`, case (HTTP)."""
    under = base.replace("-", "_")
    found = [base, under, base + "-bin", under + "-bin"]
    if door == "rest":
        title = "-".join(part.capitalize() for part in base.split("-"))
        found += [title, base.upper(), under.upper(), title + "-Bin", under.title() + "-bin"]
    return found


def attack_smuggling(world: ProcessWorld, cases: int, seed: int) -> ClassResult:
    """Class 6: nothing a caller sends under a variant of a header the gateway sets may reach
    the upstream; the identity the upstream sees is the caller's."""
    started = time.monotonic()
    rng = random.Random(seed)
    result = ClassResult(
        6,
        "No header the gateway sets can be smuggled",
        "calls on every door carrying variants of x-opsgate-principal and x-request-id (case, "
        "_ for -, -bin), with marked values; the upstream's metadata is searched for the marks",
    )
    token = world.token(ALICE)
    reached = 0
    for index in range(cases):
        door = rng.choice(world.doors())
        tag = f"smuggled{seed % 1000}x{index}"
        chosen = rng.sample(
            [v for base in GATEWAY_HEADERS for v in header_variants(base, door)], rng.randint(1, 3)
        )
        extra = [_header(key, tag, door) for key in chosen]
        name = unique("projects/hdr", index, rng.randrange(10**6))
        answer = world.door(door).operation("get", name, token, extra=extra)
        world.calls += 1
        result.cases += 1
        result.calls += 1
        result.families.update(f"{door} {k}" for k in chosen)
        records = world.reached(name)
        reached += bool(records)
        for record in records:
            leaked = [k for k, v in record.metadata if tag.encode() in _bytes(v)]
            identity = record.header("x-opsgate-principal")
            if leaked:
                result.violations.append(
                    Violation(
                        "smuggled", door, f"sent {chosen}, upstream got {leaked} ({answer.code})"
                    )
                )
            elif identity != "user:alice@acme.example":
                result.violations.append(
                    Violation(
                        "identity", door, f"sent {chosen}, upstream saw identity {identity!r}"
                    )
                )
    result.figures["calls that reached the upstream"] = reached
    result.seconds = time.monotonic() - started
    return result


def _header(key: str, tag: str, door: str) -> tuple[str, str | bytes]:
    value = f"user:root@acme.example;{tag}"
    if not key.lower().endswith("-bin"):
        return key, value
    raw = value.encode()
    return (key, base64.b64encode(raw).decode()) if door == "rest" else (key, raw)


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")


# -- class 8: the audit record of a call whose deadline expired -----------------------------------

UPSTREAM_DELAY_S = 0.4


def attack_deadlines(world: ProcessWorld, calls: int, seed: int) -> ClassResult:
    """Class 8: concurrent calls against a slow upstream, most with deadlines shorter than it;
    every record of a call whose client deadline expired must say DEADLINE_EXCEEDED (4)."""
    started = time.monotonic()
    rng = random.Random(seed)
    result = ClassResult(
        8,
        "The audit record names the right cause",
        f"concurrent calls (12 at a time, both doors) to an upstream {UPSTREAM_DELAY_S} s slow, "
        "nine in ten with deadlines of 0.08 s to 0.25 s, the rest long enough",
    )
    token = world.token(ALICE)
    plan = []
    for index in range(calls):
        door = "rest" if world.rest is not None and rng.random() < 0.25 else "grpc"
        short = rng.random() < 0.9
        deadline = rng.uniform(0.08, UPSTREAM_DELAY_S - 0.15) if short else rng.uniform(1.2, 1.8)
        plan.append((door, deadline, unique("projects/slow", index, rng.randrange(10**6))))

    def one(job: tuple[str, float, str]) -> Answer:
        door, deadline, name = job
        if door == "grpc":
            return world.call("grpc", name, token, timeout=deadline)
        session = RestSession(world.door("rest").address)
        try:
            return session.operation("get", name, token, timeout=deadline)
        finally:
            session.close()

    world.upstream.delay.delay_s = UPSTREAM_DELAY_S
    try:
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(one, plan))
    finally:
        world.upstream.delay.delay_s = 0.0
    result.cases = result.calls = len(plan)
    records = world.records_for({name for _, _, name in plan})
    expired = checked = 0
    codes: Counter[str] = Counter()
    for (door, deadline, name), answer in zip(plan, answers, strict=True):
        result.families[
            f"{door} {'short' if deadline < 1 else 'long'} deadline: {answer.code}"
        ] += 1
        if answer.code != "DEADLINE_EXCEEDED":
            continue
        expired += 1
        mine = records.get(name, [])
        for record in mine:
            checked += 1
            code = record.get("protoPayload", {}).get("status", {}).get("code", 0)
            codes[str(code)] += 1
            if code != 4:
                kind = "recorded_cancelled" if code == 1 else "recorded_other"
                detail = f"deadline {deadline:.2f} s expired; the record says code {code}"
                result.violations.append(Violation(kind, door, detail))
        if len(mine) != 1:
            detail = f"deadline {deadline:.2f} s expired; {len(mine)} records for the call"
            result.violations.append(Violation("records", door, detail))
    result.figures["calls whose deadline expired"] = expired
    result.figures["their records checked"] = checked
    result.figures["record codes"] = dict(codes)
    result.seconds = time.monotonic() - started
    return result
