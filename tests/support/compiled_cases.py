"""Cases for the compiled tier's differential test: callers (tokens of several issuers, good
and hostile), names (routed and hostile) and generated policies (members of every kind, static
groups, deny rules with exceptions and conditions), all from a seed."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from google.longrunning import operations_pb2

from gateway.testing.idp import LocalIdp
from gateway.testing.tokens import SigningKey, claims, rsa_key
from tests.support.stack import AUDIENCE, ISSUER, Identity

SERVICE = "/google.longrunning.Operations/"
ISSUER_B = "https://idp-b.test"  # names callers by `sub`, groups in `roles`
ISSUER_C = "https://idp-c.test"  # vouches for its emails, its `hd` trusted
SCOPE = "https://www.googleapis.com/auth/cloud-platform"

REQUESTS = {
    "GetOperation": operations_pb2.GetOperationRequest,
    "ListOperations": operations_pb2.ListOperationsRequest,
    "CancelOperation": operations_pb2.CancelOperationRequest,
    "DeleteOperation": operations_pb2.DeleteOperationRequest,
}


@dataclass(frozen=True)
class Caller:
    label: str
    metadata: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Case:
    caller: Caller
    method: str
    name: str

    @property
    def path(self) -> str:
        return SERVICE + self.method

    def request(self) -> bytes:
        return REQUESTS[self.method](name=self.name).SerializeToString()

    def __str__(self) -> str:
        return f"{self.caller.label} {self.method} {self.name!r}"


ACCOUNT = "ci-deployer@acme-prod.iam.gserviceaccount.com"
GOOGLE = "https://accounts.google.com"


@dataclass
class Issuers:
    """Three trusted issuers (A is the test identity), Google's ID tokens and one service
    account's own JWTs (their keys served by `idp`), and a key nobody trusts."""

    a: Identity
    idp: LocalIdp
    b: SigningKey = field(default_factory=rsa_key)
    c: SigningKey = field(default_factory=rsa_key)
    google: SigningKey = field(default_factory=lambda: rsa_key(fresh=True))
    account: SigningKey = field(default_factory=lambda: rsa_key(fresh=True))
    stranger: SigningKey = field(default_factory=lambda: rsa_key(fresh=True))

    def write_key_sets(self) -> None:
        for name, key in (("b", self.b), ("c", self.c)):
            jwks = {"keys": [key.jwk]}
            (self.a.directory / f"jwks-{name}.json").write_text(json.dumps(jwks))
        self.idp.serve_json("/google-certs", {"keys": [self.google.jwk]})
        self.idp.serve_json(f"/sa/{ACCOUNT}", {"keys": [self.account.jwk]})

    def authentication_yaml(self) -> str:
        """More issuers, continuing the `issuers:` list the test identity's section opens."""
        directory = self.a.directory
        return (
            f"    - issuer: {ISSUER_B}\n"
            f"      audiences: [{AUDIENCE}]\n"
            f"      jwks_file: {directory / 'jwks-b.json'}\n"
            "      principal_claim: sub\n"
            "      groups_claim: roles\n"
            f"    - issuer: {ISSUER_C}\n"
            f"      audiences: [{AUDIENCE}]\n"
            f"      jwks_file: {directory / 'jwks-c.json'}\n"
            "      emails_verified: true\n"
            "      trust_hosted_domain: true\n"
            "  google_id_tokens:\n"
            f"    audiences: [{AUDIENCE}]\n"
            f"    certs_url: {self.idp.url('/google-certs')}\n"
            "    groups_claim: groups\n"
            "  service_account_jwts:\n"
            f"    allowed: [{ACCOUNT}]\n"
            f"    audiences: [{AUDIENCE}]\n"
            f"    keys_url: {self.idp.base_url}/sa/{{email}}\n"
        )


FORGED = (
    ("x-opsgate-name", '["projects/acme-prod"]'),
    ("x-opsgate-route", "route:0"),
    ("x-opsgate-p0-iss", ISSUER),
    ("x-opsgate-p0-email", "alice@acme.example"),
    ("x-opsgate-p0-email-verified", "true"),
    ("x-opsgate-p0-list-groups", '["platform@acme.example"]'),
    ("x-opsgate-p1-sub", "b-123"),
    ("x-opsgate-p2-hd", "acme.example"),
)


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def callers(issuers: Issuers) -> list[Caller]:
    """Good callers of every member kind, and tokens that try to be someone they are not."""
    a = issuers.a

    def by_a(label: str, **extra: Any) -> Caller:
        return Caller(label, _bearer(a.token(**extra)))

    def by(key: SigningKey, issuer: str, label: str, **extra: Any) -> Caller:
        return Caller(label, _bearer(key.sign(claims(issuer, AUDIENCE, **extra))))

    now = int(time.time())
    verified = {"email_verified": True}
    return [
        by_a("alice", email="alice@acme.example", **verified),
        by_a("ALICE mixed case", email="ALICE@Acme.Example", **verified),
        by_a("bob", email="bob@acme.example", **verified),
        by_a("carol (static groups)", email="carol@acme.example", **verified),
        by_a("paula", email="paula@acme.example", **verified),
        by_a("mallory contractor", email="mallory@contractor.example", **verified),
        by_a("lead", email="lead@acme.example", **verified),
        by_a("dev", email="dev@acme.example", **verified),
        by_a("dave", email="dave@acme.example", **verified),
        by_a("frank", email="frank@contractor.example", **verified),
        by_a(
            "eng by token group",
            email="zed@acme.example",
            groups=["engineering@acme.example"],
            **verified,
        ),
        by_a(
            "ENG mixed-case group",
            email="zed@acme.example",
            groups=["ENGINEERING@ACME.EXAMPLE"],
            **verified,
        ),
        by_a(
            "group: prefixed",
            email="zed@acme.example",
            groups=["group:support@acme.example"],
            **verified,
        ),
        by_a(
            "GROUP: prefix (not stripped)",
            email="zed@acme.example",
            groups=["GROUP:support@acme.example"],
            **verified,
        ),
        by_a(
            "many groups",
            email="zed@other.example",
            groups=["x@y.example", "tier2@acme.example", "platform@acme.example"],
            **verified,
        ),
        by_a("analyst", email="ann@globex.example", groups=["analysts@globex.example"], **verified),
        by_a(
            "contractors group",
            email="kim@acme.example",
            groups=["contractors@acme.example"],
            **verified,
        ),
        by_a(
            "ci service account", email="ci-deployer@acme-prod.iam.gserviceaccount.com", **verified
        ),
        by_a("stranger domain", email="eve@evil.example", **verified),
        by_a("look-alike domain", email="eve@acme.example.evil", **verified),
        by_a("kelvin sign", email="\u212aate@acme.example", **verified),
        by_a("unverified alice", email="alice@acme.example", email_verified=False),
        by_a("no email_verified", email="alice@acme.example"),
        by_a("email_verified as text", email="alice@acme.example", email_verified="true"),
        by_a("email a number", email=12345, **verified),
        by_a(
            "groups a string",
            email="zed@acme.example",
            groups="engineering@acme.example",
            **verified,
        ),
        by_a(
            "groups a list-looking string",
            email="zed@acme.example",
            groups='["engineering@acme.example"]',
            **verified,
        ),
        by_a(
            "groups with a number",
            email="zed@acme.example",
            groups=[1, "engineering@acme.example"],
            **verified,
        ),
        by_a("empty groups", email="bob@acme.example", groups=[], **verified),
        by_a(
            "scope without cloud-platform",
            email="alice@acme.example",
            scope="openid email",
            **verified,
        ),
        by_a(
            "scope with cloud-platform",
            email="alice@acme.example",
            scope=f"openid {SCOPE}",
            **verified,
        ),
        by_a("scp list", email="alice@acme.example", scp=[SCOPE], **verified),
        by_a("scp list without", email="alice@acme.example", scp=["openid"], **verified),
        by_a(
            "iat in the future",
            email="alice@acme.example",
            iat=now + 3600,
            exp=now + 7200,
            **verified,
        ),
        by_a("lives too long", email="alice@acme.example", iat=now, exp=now + 90000, **verified),
        by_a("expired", email="alice@acme.example", iat=now - 7200, exp=now - 3600, **verified),
        by(issuers.b, ISSUER_B, "B sub b-123", sub="b-123"),
        by(
            issuers.b,
            ISSUER_B,
            "B with alice's verified email",
            sub="b-9",
            email="alice@acme.example",
            email_verified=True,
        ),
        by(
            issuers.b,
            ISSUER_B,
            "B with lead's unverified email",
            sub="b-10",
            email="lead@acme.example",
            email_verified=False,
        ),
        by(issuers.b, ISSUER_B, "B roles", sub="b-11", roles=["engineering@acme.example"]),
        by(
            issuers.b,
            ISSUER_B,
            "B claiming groups (not its claim)",
            sub="b-12",
            groups=["platform@acme.example"],
        ),
        by(issuers.c, ISSUER_C, "C hd acme", email="x@partner.example", hd="acme.example"),
        by(issuers.c, ISSUER_C, "C alice, no email_verified", email="alice@acme.example"),
        by(
            issuers.c,
            ISSUER_C,
            "C claims A's issuer groups",
            email="q@partner.example",
            groups=["platform@acme.example"],
        ),
        by(
            issuers.stranger,
            ISSUER,
            "A's issuer, stranger's key",
            email="alice@acme.example",
            **verified,
        ),
        by(issuers.a.key, ISSUER_B, "B's issuer, A's key", sub="b-123"),
        by(
            issuers.google,
            GOOGLE,
            "Google alice",
            email="alice@acme.example",
            hd="acme.example",
            **verified,
        ),
        by(
            issuers.google,
            "accounts.google.com",
            "Google, short iss",
            email="bob@acme.example",
            **verified,
        ),
        by(
            issuers.google,
            GOOGLE,
            "Google hd only",
            email="x@gmail.example",
            hd="acme.example",
            **verified,
        ),
        by(issuers.google, GOOGLE, "Google unverified", email="alice@acme.example"),
        by(issuers.account, ACCOUNT, "service account", sub=ACCOUNT),
        by(
            issuers.account,
            ACCOUNT,
            "service account claiming alice",
            sub=ACCOUNT,
            email="alice@acme.example",
            groups=["platform@acme.example"],
            **verified,
        ),
        Caller(
            "service account, scope not aud",
            _bearer(
                issuers.account.sign(
                    {"iss": ACCOUNT, "sub": ACCOUNT, "scope": SCOPE, "iat": now, "exp": now + 600}
                )
            ),
        ),
        Caller(
            "service account, neither aud nor scope",
            _bearer(
                issuers.account.sign({"iss": ACCOUNT, "sub": ACCOUNT, "iat": now, "exp": now + 600})
            ),
        ),
        by(
            issuers.account,
            ACCOUNT.upper(),
            "service account, iss in capitals",
            sub=ACCOUNT.upper(),
        ),
        by(issuers.account, ACCOUNT, "service account, sub differs", sub="other@acme.example"),
        by(
            issuers.account,
            ACCOUNT,
            "service account, lives 2 h",
            sub=ACCOUNT,
            iat=now,
            exp=now + 7200,
        ),
        Caller("anonymous", ()),
        # Every header the compiled filters decide on, sent by the caller: never believed.
        Caller(
            "nobody with forged headers",
            _bearer(a.token(email="nobody@nowhere.example", **verified)) + FORGED,
        ),
        Caller("anonymous with forged headers", FORGED),
        Caller("basic auth", (("authorization", "Basic YWxpY2U6cGFzcw=="),)),
        Caller("garbage token", _bearer("not.a.jwt")),
        Caller("two tokens", _bearer(a.token(email="alice@acme.example", **verified)) * 2),
        Caller(
            "huge token", _bearer(a.token(email="alice@acme.example", pad="x" * 17000, **verified))
        ),
    ]


OPERATION = "projects/{p}/locations/{l}/operations/{o}"
VIEW = "projects/{p}/locations/{l}/authorizedViewSets/{s}/authorizedViews/{v}"


def names(projects: list[str]) -> list[tuple[str, str]]:
    """(method, name) pairs: every route's names, and hostile ones."""
    found: list[tuple[str, str]] = []
    for p in projects:
        for location in ("us-central1", "europe-west1"):
            op = OPERATION.format(p=p, l=location, o="6857023190548371923")
            view = VIEW.format(p=p, l=location, s="support", v="tier2")
            found += [
                ("GetOperation", op),
                ("CancelOperation", op),
                ("ListOperations", f"projects/{p}/locations/{location}"),
                ("GetOperation", f"{view}/operations/1"),
                ("CancelOperation", f"{view}/operations/1"),
                ("ListOperations", view),
            ]
    base = "projects/acme-prod/locations/us-central1/operations/"
    hostile = [
        "projects/acme-prod-evil/locations/us-central1/operations/1",
        "projects/acme-prod/../acme-staging/locations/us-central1/operations/1",
        "projects/acme-prod/locations/us-central1/operations/..",
        base + "a%2Fb",
        base + "1/",
        "/" + base + "1",
        "projects/acme-prod//locations/us-central1/operations/1",
        base + "a b",
        base + "caf\u00e9",
        base + "a\u2028b",
        base + "a\u200bb",
        base + "a\x7fb",
        base + 'a"b',
        base + "a\\b",
        base + "a\tb",
        base + "x" * 1200,
        base + "\u00e9" * 500,
        "",
        "projects/acme-prod",
        "projects/acme-prod/locations/us-central1/operations",
        "//contactcenterinsights.googleapis.com/" + base + "1",
        "PROJECTS/acme-prod/locations/us-central1/operations/1",
    ]
    found += [("GetOperation", n) for n in hostile]
    found += [("CancelOperation", n) for n in hostile[:6]]
    found += [("DeleteOperation", base + "1")]
    return found


def cases(issuers: Issuers, projects: list[str]) -> Iterator[Case]:
    every = callers(issuers)
    for method, name in names(projects):
        for caller in every:
            yield Case(caller, method, name)


# --- generated policies ---------------------------------------------------------------------

MEMBERS = [
    "user:alice@acme.example",
    "user:Bob@Acme.Example",
    "user:carol@acme.example",
    "user:mallory@contractor.example",
    "serviceAccount:ci-deployer@acme-prod.iam.gserviceaccount.com",
    "group:engineering@acme.example",
    "group:support@acme.example",
    "group:team@acme.example",  # static, below
    "group:analysts@globex.example",
    "principalSet://goog/group/platform@acme.example",
    "domain:acme.example",
    "domain:partner.example",
    "principal://goog/subject/lead@acme.example",
    "principal://goog/subject/alice@acme.example",
    "principal://idp-b.test/subject/b-123",
    "principal://idp-b.test/subject/b-9",
    "allAuthenticatedUsers",
    "allUsers",
    "deleted:user:old@acme.example?uid=123456789012345678901",
]
ROLES = [
    "roles/contactcenterinsights.viewer",
    "roles/contactcenterinsights.editor",
    "roles/contactcenterinsights.admin",
    "roles/contactcenterinsights.authorizedViewer",
    "roles/viewer",
]
PERMISSIONS = [
    "contactcenterinsights.operations.get",
    "contactcenterinsights.operations.cancel",
    "contactcenterinsights.operations.list",
    "contactcenterinsights.authorizedOperations.get",
    "contactcenterinsights.authorizedOperations.cancel",
    "contactcenterinsights.googleapis.com/operations.*",
    "contactcenterinsights.googleapis.com/*.cancel",
]
CONDITIONS = [
    'request.time < timestamp("2099-01-01T00:00:00Z")',
    'request.time < timestamp("2001-01-01T00:00:00Z")',
    'resource.name.startsWith("projects/acme-prod/locations/us-central1")',
    'resource.name.endsWith("/operations/1")',
    'resource.type == "contactcenterinsights.googleapis.com/Operation"',
    'resource.type == "contactcenterinsights.googleapis.com/Location" || '
    'resource.name.contains("tier2")',
    '!(resource.service == "contactcenterinsights.googleapis.com")',
    'request.time > timestamp("2020-01-01T00:00:00+02:00") && '
    '!resource.name.startsWith("projects/acme-staging")',
]
PROJECTS = ["acme-prod", "acme-staging", "acme-prod-evil", "globex-analytics"]


def resources(rng: random.Random) -> str:
    p = rng.choice(PROJECTS)
    depth = rng.randrange(4)
    parts = [
        f"projects/{p}",
        "locations/us-central1",
        "authorizedViewSets/support",
        "authorizedViews/tier2",
    ]
    return "/".join(parts[: depth + 1])


def policy_yaml(seed: int) -> str:
    """A random policy in opsgate's file shape (JSON is YAML)."""
    rng = random.Random(seed)
    allow: dict[str, list[dict[str, Any]]] = {}
    for _ in range(rng.randrange(4, 14)):
        binding: dict[str, Any] = {
            "role": rng.choice(ROLES),
            "members": rng.sample(MEMBERS, rng.randrange(1, 4)),
        }
        if rng.random() < 0.35:
            binding["condition"] = {"expression": rng.choice(CONDITIONS)}
        allow.setdefault(resources(rng), []).append(binding)
    deny: dict[str, list[dict[str, Any]]] = {}
    for _ in range(rng.randrange(0, 4)):
        rule: dict[str, Any] = {
            "deniedPrincipals": rng.sample(MEMBERS, rng.randrange(1, 3)),
            "deniedPermissions": rng.sample(PERMISSIONS, rng.randrange(1, 3)),
        }
        if rng.random() < 0.5:
            rule["exceptionPrincipals"] = rng.sample(MEMBERS[:-2], rng.randrange(1, 3))
        if rng.random() < 0.3:
            rule["exceptionPermissions"] = [rng.choice(PERMISSIONS[:5])]
        if rng.random() < 0.4:
            rule["denialCondition"] = {"expression": rng.choice(CONDITIONS)}
        deny.setdefault(resources(rng), []).append(rule)
    document = {
        "allow": [{"resource": r, "bindings": b} for r, b in allow.items()],
        "deny": [{"resource": r, "rules": rules} for r, rules in deny.items()],
        "groups": {
            "team@acme.example": ["user:carol@acme.example", "group:ops@acme.example"],
            "ops@acme.example": ["user:dave@acme.example", "group:tier2@acme.example"],
        },
    }
    return json.dumps(document, indent=1)
