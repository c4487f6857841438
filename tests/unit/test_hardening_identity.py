"""Regression tests for issue 15, items 3 to 5: syntax checked whole, one canonical form for
identities that cannot alias, and an email that is not verified counting as not verified."""

from __future__ import annotations

import asyncio
import json
import re
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from google.api_core import exceptions as core_exceptions
from google.api_core import operations_v1
from hypothesis import given
from hypothesis import strategies as st

from gateway.authn.certificates import PEM_KEY, CertificateIdentities
from gateway.authn.claims import PrincipalRules, principal_from
from gateway.authn.factory import build_authn
from gateway.authn.jwt_verifier import is_self_signed
from gateway.authn.settings import (
    AuthnSettings,
    CertificateIdentity,
    ClientCertificateConfig,
    GoogleIdTokenConfig,
    IssuerConfig,
    ServiceAccountJwtConfig,
)
from gateway.config import load_settings
from gateway.errors import ConfigError, Unauthenticated
from gateway.pipeline import build_pipeline
from gateway.policy.evaluator import evaluate
from gateway.policy.loader import PolicyError, load_policy_text
from gateway.policy.members import caller_member_key, canonical_identity, parse_member
from gateway.policy.model import AccessRequest, Caller
from gateway.policytools.inputs import InputError, caller_for
from gateway.profile import load_profile
from gateway.reference_upstream import ReferenceUpstream, start_reference_upstream
from gateway.server import Gateway, start_gateway
from gateway.testing.idp import local_idp
from gateway.testing.loop import LoopThread
from gateway.testing.tokens import claims, jwks, rsa_key
from tests.support.certs import make_pki
from tests.support.stack import FULL_PROFILE, Identity, make_identity
from tests.unit.policytools.support import opsgate

GET = "contactcenterinsights.operations.get"
OPERATION = "projects/acme/locations/us/operations/op1"
NOW = datetime(2026, 6, 1, tzinfo=UTC)
KELVIN = "\u212a"  # KELVIN SIGN: str.lower() makes it an ASCII 'k'


def _problems(text: str, source: str = "policy.yaml") -> tuple[str, ...]:
    with pytest.raises(PolicyError) as err:
        load_policy_text(textwrap.dedent(text), source)
    return tuple(str(problem) for problem in err.value.problems)


def _line_of(text: str, needle: str) -> int:
    lines = textwrap.dedent(text).splitlines()
    return next(number for number, line in enumerate(lines, 1) if needle in line)


# -- 3. Syntax checks are full matches --------------------------------------------------------

# Each member form, written in a YAML block scalar: the value keeps its line break. With a
# `$`-anchored check it loaded, and a deny rule naming it never matched anybody.
BLOCK_MEMBERS = [
    "user:kim@acme.example",
    "serviceAccount:ci@acme.iam.gserviceaccount.com",
    "group:admins@acme.example",
    "domain:acme.example",
    "principal://goog/subject/kim@acme.example",
    "principalSet://goog/group/admins@acme.example",
    "principal://iam.googleapis.com/projects/-/serviceAccounts/ci@acme.iam.gserviceaccount.com",
    "principal://iam.googleapis.com/locations/global/workforcePools/p/subject/kim",
    "deleted:user:gone@acme.example?uid=123",
]

DENY_NAMING = """\
allow:
  - resource: projects/acme
    bindings:
      - role: roles/contactcenterinsights.viewer
        members: [allAuthenticatedUsers]
deny:
  - resource: projects/acme
    rules:
      - deniedPrincipals:
          - |
            {member}
        deniedPermissions: [contactcenterinsights.operations.get]
"""


@pytest.mark.parametrize("member", BLOCK_MEMBERS, ids=[m.split(":")[0] for m in BLOCK_MEMBERS])
def test_a_member_with_a_trailing_line_break_is_a_load_error_at_its_line(member: str) -> None:
    text = DENY_NAMING.format(member=member)
    (problem,) = _problems(text)
    assert problem.startswith(f"policy.yaml:{_line_of(text, member)}: ")
    assert "trailing whitespace" in problem


def test_policy_check_strict_and_the_gateway_both_refuse_a_trailing_line_break(
    tmp_path: Path, identity: Identity
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(DENY_NAMING.format(member="user:kim@acme.example"))
    where = f"{policy}:{_line_of(policy.read_text(), 'user:kim@acme.example')}:"

    checked = opsgate("policy", "check", "--strict", policy)
    assert checked.code != 0 and where in checked.out

    config = tmp_path / "opsgate.yaml"
    config.write_text(
        f"upstream:\n  target: 127.0.0.1:1\n{identity.issuer_yaml()}"
        f"authorization:\n  policy_file: {policy}\n"
    )
    with pytest.raises(ConfigError) as err:
        build_pipeline(load_settings(config))  # what `opsgate serve` loads before listening
    assert str(err.value).startswith(where)


# Every other string the loader validates, each made wrong in a way a `$`, a `\s` or a
# case-insensitive reading let through: (id, policy, text on the reported line, message).
LOADER_SYNTAX = [
    (
        "resource-trailing-line-break",
        """\
        allow:
          - resource: |
              projects/acme
            bindings: [{role: roles/contactcenterinsights.viewer, members: [allUsers]}]
        """,
        "resource: |",
        "is not a resource this gateway authorizes",
    ),
    (
        "resource-invisible-character",
        """\
        allow:
          - resource: "projects/ac\\u200bme"
            bindings: [{role: roles/contactcenterinsights.viewer, members: [allUsers]}]
        """,
        "resource:",
        "is not a resource this gateway authorizes",
    ),
    (
        "crm-project-trailing-line-break",
        """\
        allow:
          - resource: "//cloudresourcemanager.googleapis.com/projects/acme\\n"
            bindings: [{role: roles/contactcenterinsights.viewer, members: [allUsers]}]
        """,
        "resource:",
        "is not a resource this gateway authorizes",
    ),
    (
        "custom-role-name-trailing-line-break",
        """\
        roles:
          - name: "projects/acme/roles/reader\\n"
            includedPermissions: [contactcenterinsights.operations.get]
        """,
        "name:",
        "is not a custom role name",
    ),
    (
        "role-stage-in-lower-case",
        """\
        roles:
          - name: projects/acme/roles/reader
            stage: disabled
            includedPermissions: [contactcenterinsights.operations.get]
        """,
        "stage:",
        "is not a role stage",
    ),
    (
        "permission-trailing-line-break",
        """\
        deny:
          - resource: projects/acme
            rules:
              - deniedPrincipals: [allUsers]
                deniedPermissions: ["contactcenterinsights.operations.get\\n"]
        """,
        "deniedPermissions:",
        "contactcenterinsights.operations.get",
    ),
    (
        "group-email-trailing-line-break",
        """\
        groups:
          "group:admins@acme.example\\n": [user:kim@acme.example]
        """,
        "group:admins",
        "is not a group email",
    ),
    (
        "goog-subject-in-upper-case",
        """\
        deny:
          - resource: projects/acme
            rules:
              - deniedPrincipals: [principal://GOOG/subject/kim@acme.example]
                deniedPermissions: [contactcenterinsights.operations.get]
        """,
        "GOOG",
        "write 'principal://goog/subject/' exactly so",
    ),
    (
        "goog-host-other-than-subject",
        """\
        deny:
          - resource: projects/acme
            rules:
              - deniedPrincipals: [principal://goog/subjects/kim@acme.example]
                deniedPermissions: [contactcenterinsights.operations.get]
        """,
        "subjects",
        "malformed member",
    ),
    (
        "principal-with-invisible-character",
        """\
        deny:
          - resource: projects/acme
            rules:
              - deniedPrincipals: ["principal://idp.acme.example/subject/k\\u200bim"]
                deniedPermissions: [contactcenterinsights.operations.get]
        """,
        "deniedPrincipals:",
        "malformed member",
    ),
    (
        "deleted-member-uid-not-a-number",
        """\
        allow:
          - resource: projects/acme
            bindings:
              - role: roles/contactcenterinsights.viewer
                members: ["deleted:user:gone@acme.example?uid=12 x"]
        """,
        "deleted:",
        "malformed member",
    ),
]


@pytest.mark.parametrize(
    ("text", "needle", "message"),
    [case[1:] for case in LOADER_SYNTAX],
    ids=[case[0] for case in LOADER_SYNTAX],
)
def test_each_loader_syntax_is_matched_whole(text: str, needle: str, message: str) -> None:
    problems = _problems(text)
    assert any(
        p.startswith(f"policy.yaml:{_line_of(text, needle)}: ") and message in p for p in problems
    ), problems


# Config values compared exactly with what callers send, or handed to gRPC: each refused with
# its file, line and key. (id, YAML after `upstream`, message)
CONFIG_SYNTAX = [
    (
        "identity-header-cyrillic-i",
        "authentication:\n  identity_header: x-opsgate-pr\u0456ncipal\n{issuer}",
        r":4: key 'authentication.identity_header': 'x-opsgate-pr\\u0456ncipal' is not a lowercase",
    ),
    (
        "identity-header-bin",
        "authentication:\n  identity_header: x-opsgate-principal-bin\n{issuer}",
        r"key 'authentication.identity_header': .* not ...-bin",
    ),
    (
        "listen-port-in-arabic-indic-digits",
        "listen: 127.0.0.1:\u0668\u0660\u0668\u0660\nauthentication:\n{issuer}",
        r":3: key 'listen': .* is not HOST:PORT",
    ),
    (
        "issuer-trailing-line-break",
        "authentication:\n  issuers:\n    - issuer: |\n        https://idp.acme.example\n"
        "      audiences: [a]\n      jwks_file: c.pem\n",
        r":5: key 'authentication.issuers\[0\].issuer': 'https://idp.acme.example\\n' has "
        "surrounding whitespace",
    ),
    (
        "audience-trailing-space",
        "authentication:\n  issuers:\n    - issuer: i\n      audiences: ['a ']\n"
        "      jwks_file: c.pem\n",
        r"key 'authentication.issuers\[0\].audiences': 'a ' has surrounding whitespace",
    ),
    (
        "subject-prefix-with-a-space",
        "authentication:\n  issuers:\n    - issuer: i\n      audiences: [a]\n"
        "      jwks_file: c.pem\n      subject_prefix: 'principal://idp /subject/'\n",
        r"key 'authentication.issuers\[0\].subject_prefix': .* is not a principal://HOST",
    ),
    (
        "required-scope-with-a-space",
        "authentication:\n  required_scopes: ['openid email']\n{issuer}",
        r"key 'authentication.required_scopes': 'openid email' is not a single scope",
    ),
    (
        "allowed-service-account-kelvin",
        f"authentication:\n  service_account_jwts:\n    allowed: ['{KELVIN}i@p.iam.gserviceaccount.com']\n",
        r"key 'authentication.service_account_jwts.allowed': .* \(IAM emails are ASCII\)",
    ),
    (
        "certificate-principal-trailing-line-break",
        "tls: {{cert_file: c.pem, key_file: c.pem, client_ca_file: c.pem, require_client_cert: true}}\n"
        "authentication:\n  client_certificates:\n    identities:\n"
        '      - {{principal: "user:kim@acme.example\\n", san_uri: spiffe://acme/kim}}\n{issuer}',
        r"key 'authentication.client_certificates.identities\[0\].principal': member "
        r"'user:kim@acme.example\\n' has leading or trailing whitespace",
    ),
    (
        "certificate-san-email-kelvin",
        "tls: {{cert_file: c.pem, key_file: c.pem, client_ca_file: c.pem, require_client_cert: true}}\n"
        "authentication:\n  client_certificates:\n    identities:\n"
        f"      - {{{{principal: user:kim@acme.example, san_email: '{KELVIN}im@acme.example'}}}}\n"
        "{issuer}",
        r"san_email': .* \(IAM emails are ASCII\)",
    ),
]
ISSUER = "  issuers:\n    - issuer: i\n      audiences: [a]\n      jwks_file: c.pem\n"
AUTHORIZATION = "authorization:\n  policy_file: c.pem\n"


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in CONFIG_SYNTAX], ids=[c[0] for c in CONFIG_SYNTAX]
)
def test_config_values_compared_exactly_must_be_exact(
    tmp_path: Path, text: str, expected: str
) -> None:
    (tmp_path / "c.pem").write_text("x")
    path = tmp_path / "opsgate.yaml"
    text = "upstream:\n  target: a:1\n" + text.format(issuer=ISSUER) + AUTHORIZATION
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert str(err.value).startswith(str(path)) and re.search(expected, str(err.value)), err.value


@pytest.mark.parametrize(
    ("route", "key"),
    [
        (
            '{pattern: projects/*/locations/*/operations/*, permission: "x.operations.get\\n"}',
            "permission",
        ),
        (
            "{pattern: projects/*/locations/*/operations/op*, permission: x.operations.get}",
            "pattern",
        ),
    ],
    ids=["permission-trailing-line-break", "star-inside-a-segment"],
)
def test_a_profile_route_is_matched_whole(tmp_path: Path, route: str, key: str) -> None:
    path = tmp_path / "profile.yaml"
    path.write_text(f"service: x.googleapis.com\nroutes:\n  GetOperation:\n    - {route}\n")
    with pytest.raises(ConfigError, match=rf"key 'routes.GetOperation.{key}'"):
        load_profile(path=path)


def test_policy_test_cases_are_taken_as_written(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("allow: []\n")
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        f"- principal: |\n    user:kim@acme.example\n  permission: {GET}\n"
        f"  resource: {OPERATION}\n  expect: deny\n"
    )
    result = opsgate("policy", "test", policy, "--cases", cases)
    assert result.code != 0 and "'principal' has leading or trailing whitespace" in result.err
    for groups, hd in ((["group:admins@acme.example\n"], None), ([], " acme.example")):
        with pytest.raises(InputError):
            caller_for("user:kim@acme.example", groups, hd)


# -- 4. Identities compare in one canonical form that cannot alias ----------------------------

# Letters whose Unicode case mappings land on, or next to, ASCII ones.
_TRICKY = "kKsSiIaA\u212a\u017f\u0130\u0131\u212b\u00e5\u1e9e\u00df\uff2b\u0345\u03b9@."


@given(st.text(alphabet=st.sampled_from(_TRICKY)), st.text(alphabet=st.sampled_from(_TRICKY)))
def test_canonical_identities_are_equal_only_when_they_differ_in_ascii_case(a: str, b: str) -> None:
    assert (canonical_identity(a) == canonical_identity(b)) == (
        a == b or (a.isascii() and b.isascii() and a.lower() == b.lower())
    )


@given(st.text(), st.data())
def test_no_case_mapping_of_a_string_is_its_alias(text: str, data: st.DataObject) -> None:
    """Whatever Unicode case mapping is applied to some characters, the result compares equal
    only if every mapped character stayed ASCII."""
    mapped = "".join(
        data.draw(st.sampled_from([c, c.lower(), c.upper(), c.casefold()])) for c in text
    )
    if canonical_identity(mapped) == canonical_identity(text):
        assert mapped == text or (mapped.isascii() and text.isascii())


@given(st.text(min_size=1).filter(lambda t: not t.isascii()))
def test_a_non_ascii_email_is_never_a_policy_member(local: str) -> None:
    email = f"{local}@acme.example"
    assert parse_member(f"user:{email}").member is None
    assert caller_member_key(f"user:{email}") == f"user:{email}"  # compared exactly


GRANTS = """\
allow:
  - resource: projects/acme
    bindings:
      - role: roles/contactcenterinsights.viewer
        members:
          - user:kim@acme.example
          - user:sam@acme.example
          - user:ivy@acme.example
          - group:kim-team@acme.example
          - domain:kim.example
"""

# (id, caller, granted): each a look-alike of a member above, or an ASCII case variant of one.
ALIASES = [
    (
        "kelvin-sign-email",
        Caller(f"user:{KELVIN}im@acme.example", f"{KELVIN}im@acme.example"),
        False,
    ),
    ("long-s-email", Caller("user:\u017fam@acme.example", "\u017fam@acme.example"), False),
    (
        "dotted-capital-i-email",
        Caller("user:\u0130vy@acme.example", "\u0130vy@acme.example"),
        False,
    ),
    ("fullwidth-k-email", Caller("user:\uff2bim@acme.example", "\uff2bim@acme.example"), False),
    ("ascii-upper-case-email", Caller("user:KIM@Acme.Example", "KIM@Acme.Example"), True),
    (
        "kelvin-sign-group",
        Caller("user:x@acme.example", groups=frozenset({f"{KELVIN}im-team@acme.example"})),
        False,
    ),
    (
        "ascii-upper-case-group",
        Caller("user:x@acme.example", groups=frozenset({"KIM-TEAM@acme.example"})),
        True,
    ),
    ("kelvin-sign-hd", Caller("user:x@other.example", hosted_domain=f"{KELVIN}im.example"), False),
    ("ascii-upper-case-hd", Caller("user:x@other.example", hosted_domain="KIM.example"), True),
    (
        "kelvin-sign-verified-email-domain",
        Caller(f"user:x@{KELVIN}im.example", f"x@{KELVIN}im.example", email_verified=True),
        False,
    ),
    (
        "non-ascii-local-part-keeps-its-ascii-domain",
        Caller("user:zo\u00eb@KIM.example", "zo\u00eb@KIM.example", email_verified=True),
        True,
    ),
]


@pytest.mark.parametrize(
    ("caller", "granted"), [a[1:] for a in ALIASES], ids=[a[0] for a in ALIASES]
)
def test_a_look_alike_identity_is_not_granted_what_the_member_has(
    caller: Caller, granted: bool
) -> None:
    policy = load_policy_text(GRANTS, "policy.yaml")
    decision = evaluate(policy, caller, AccessRequest(GET, OPERATION), NOW)
    assert decision.allowed is granted


def test_a_non_ascii_member_is_a_load_error_with_its_line() -> None:
    text = GRANTS.replace("user:kim@", f"user:{KELVIN}im@")
    (problem,) = _problems(text)
    assert problem.startswith(f"policy.yaml:{_line_of(text, KELVIN)}: ")
    assert "member 'user:\\u212aim@acme.example' has non-ASCII characters" in problem


def test_the_policy_tools_take_a_look_alike_exactly(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(GRANTS)

    def verdict(principal: str) -> str:
        result = opsgate(
            "policy", "explain", "--policy", policy, "--principal", principal,
            "--permission", GET, "--resource", OPERATION, "--json",
        )  # fmt: skip
        answer = json.loads(result.out)
        assert result.code == (0 if answer["verdict"] == "GRANTED" else 1), result.err
        return f"{answer['verdict']} {answer['caller']['principal']}"

    assert verdict(f"user:{KELVIN}im@acme.example") == f"NOT_GRANTED user:{KELVIN}im@acme.example"
    assert verdict("user:KIM@acme.example") == "GRANTED user:kim@acme.example"


def test_certificate_identities_compare_in_canonical_form(tmp_path: Path) -> None:
    pki = make_pki(tmp_path, client_sans=[x509.RFC822Name("KIM@ACME.example")])
    identities = CertificateIdentities(
        ClientCertificateConfig(
            identities=(
                CertificateIdentity(
                    principal="user:Kim@Acme.example", san_email="kim@acme.example"
                ),
            )
        )
    )
    principal = identities.principal_for({PEM_KEY: [pki.client.cert_file.read_bytes()]})
    assert principal is not None
    assert (principal.member, principal.email) == ("user:kim@acme.example", "kim@acme.example")


def test_a_non_ascii_issuer_is_no_self_signed_service_account() -> None:
    email = f"{KELVIN}i@p.iam.gserviceaccount.com"
    assert not is_self_signed({"iss": email, "sub": email})
    assert is_self_signed(
        {"iss": "Ci@p.iam.gserviceaccount.com", "sub": "Ci@p.iam.gserviceaccount.com"}
    )


# -- through the real gateway -----------------------------------------------------------------


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> Identity:
    return make_identity(tmp_path_factory.mktemp("identity-idp"))


@dataclass
class Running:
    upstream: ReferenceUpstream
    gateway: Gateway
    identity: Identity
    audit_file: Path

    def get(self, **token_claims: Any) -> str:
        """The status of a GetOperation on OPERATION with a token carrying these claims."""
        channel = grpc.insecure_channel(self.gateway.address)
        metadata = [("authorization", f"Bearer {self.identity.token(**token_claims)}")]
        try:
            operations_v1.OperationsClient(channel).get_operation(
                OPERATION, metadata=metadata, retry=None, timeout=10
            )
        except core_exceptions.GoogleAPICallError as err:
            return str(err.grpc_status_code.name)
        finally:
            channel.close()
        return "OK"

    def audit_records(self, count: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = self.audit_file.read_text() if self.audit_file.exists() else ""
            lines = [line for line in text.splitlines() if line.strip()]
            if len(lines) >= count:
                return [json.loads(line) for line in lines]
            time.sleep(0.05)
        raise AssertionError(f"fewer than {count} audit records")


@contextmanager
def running(
    loop: LoopThread, tmp: Path, identity: Identity, policy: str, extra: str = "", **issuer: Any
) -> Iterator[Running]:
    tmp.mkdir(exist_ok=True)
    upstream = loop.run(start_reference_upstream("127.0.0.1:0", seed=False))
    upstream.store.create(OPERATION)
    policy_file = tmp / "policy.yaml"
    policy_file.write_text(policy)
    audit_file = tmp / "audit.log"
    config = tmp / "opsgate.yaml"
    config.write_text(
        f"listen: 127.0.0.1:0\nupstream:\n  target: {upstream.address}\n"
        f"{identity.issuer_yaml(**issuer)}"
        f"authorization:\n  policy_file: {policy_file}\n  profile_file: {FULL_PROFILE}\n"
        f"audit:\n  sink: file\n  file:\n    path: {audit_file}\n    fsync: always\n{extra}"
    )
    gateway = loop.run(start_gateway(load_settings(config)))
    try:
        yield Running(upstream, gateway, identity, audit_file)
    finally:
        loop.run(gateway.stop(0))
        loop.run(upstream.stop(0))


def _principal_header(stack: Running) -> str | bytes | None:
    return stack.upstream.calls()[-1].header("x-opsgate-principal")


def test_a_kelvin_sign_email_is_not_kim_through_the_gateway(
    loop: LoopThread, tmp_path: Path, identity: Identity
) -> None:
    limits = "rate_limits:\n  - {name: per-caller, rate_per_s: 0.001, burst: 1}\n"
    with running(loop, tmp_path, identity, GRANTS, limits) as stack:
        assert stack.get(email="KIM@Acme.Example") == "OK"
        # One canonical spelling upstream, whatever case the token used.
        assert _principal_header(stack) == "user:kim@acme.example"
        # Same canonical identity, same rate-limit bucket: the burst of 1 is spent.
        assert stack.get(email="kim@acme.example") == "RESOURCE_EXHAUSTED"
        # The look-alike has a bucket of its own, and none of kim's grants.
        assert stack.get(email=f"{KELVIN}im@acme.example") == "PERMISSION_DENIED"
        assert stack.get(email="x@acme.example", groups=[f"{KELVIN}im-team@acme.example"]) == (
            "PERMISSION_DENIED"
        )
        assert len(stack.upstream.calls()) == 1
        records = stack.audit_records(4)
    # The test issuer is not Google: its callers' verified emails are recorded as a third
    # party's (thirdPartyPrincipal), never as Google's principalEmail.
    assert all("principalEmail" not in r["protoPayload"]["authenticationInfo"] for r in records)
    who = [
        (
            r["protoPayload"]["authenticationInfo"]["thirdPartyPrincipal"].get("email"),
            r["protoPayload"]["metadata"].get("principalMember"),
        )
        for r in records
    ]
    assert who == [
        ("kim@acme.example", "user:kim@acme.example"),
        ("kim@acme.example", "user:kim@acme.example"),
        (f"{KELVIN}im@acme.example", f"user:{KELVIN}im@acme.example"),  # exact, never folded
        ("x@acme.example", "user:x@acme.example"),
    ]


# -- 5. Unverified means unverified -----------------------------------------------------------

RULES = PrincipalRules(issuer="https://idp.acme.example")
VOUCHING = PrincipalRules(issuer="https://idp.acme.example", emails_verified=True)
LENIENT = PrincipalRules(issuer="https://idp.acme.example", require_email_verified=False)
SELF_SIGNED = PrincipalRules(issuer="self-signed", principal_claim="iss")
DROP = object()

# (id, rules, email_verified claim (DROP: absent), verified, or None: refused)
VERIFIED = [
    ("absent-refused", RULES, DROP, None),
    ("false-refused", RULES, False, None),
    ("true", RULES, True, True),
    ("absent-issuer-vouches", VOUCHING, DROP, True),
    ("false-although-issuer-vouches", VOUCHING, False, None),
    ("absent-not-required", LENIENT, DROP, False),
    ("string-true-is-not-a-boolean", RULES, "true", None),
    ("self-signed-service-account", SELF_SIGNED, DROP, True),
]


@pytest.mark.parametrize(
    ("rules", "claim", "verified"), [v[1:] for v in VERIFIED], ids=[v[0] for v in VERIFIED]
)
def test_an_absent_email_verified_is_not_verified(
    rules: PrincipalRules, claim: object, verified: bool | None
) -> None:
    token: dict[str, object] = {
        "iss": "ci@p.iam.gserviceaccount.com",
        "sub": "1",
        "email": "kim@acme.example",
    }
    if claim is not DROP:
        token["email_verified"] = claim
    if verified is None:
        with pytest.raises(Unauthenticated):
            principal_from(token, rules, None)
        return
    assert principal_from(token, rules, None).email_verified is verified


def _hd_principal(settings: AuthnSettings, token: str) -> str | None:
    authenticator = build_authn(settings).authenticator
    verified = asyncio.run(authenticator.verify([("authorization", f"Bearer {token}")]))
    return verified.principal.hosted_domain


def test_hd_counts_only_from_an_issuer_trusted_for_it(tmp_path: Path) -> None:
    key = rsa_key(kid="hd-key")
    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps(jwks(key)))
    sa = "ci@p.iam.gserviceaccount.com"
    with local_idp() as idp:
        idp.serve_json("/certs", jwks(key))
        idp.serve_json(f"/sa/{sa}", jwks(key))

        def issuer(name: str, **options: Any) -> AuthnSettings:
            config = IssuerConfig(issuer=name, audiences=("a",), jwks_file=keys, **options)
            return AuthnSettings(issuers=(config,))

        def token(iss: str, **extra: Any) -> str:
            return key.sign(claims(iss, "a", hd="ACME.example", **extra))

        plain = "https://idp.acme.example"
        google = "https://accounts.google.com"
        assert _hd_principal(issuer(plain), token(plain)) is None
        assert _hd_principal(issuer(plain, trust_hosted_domain=True), token(plain)) == (
            "acme.example"
        )
        assert _hd_principal(issuer(google), token(google)) == "acme.example"
        id_tokens = AuthnSettings(
            google_id_tokens=GoogleIdTokenConfig(audiences=("a",), certs_url=idp.url("/certs"))
        )
        assert _hd_principal(id_tokens, token("accounts.google.com", scope=None)) == "acme.example"
        # A service account writes its own claims: its hd proves nothing.
        service_accounts = AuthnSettings(
            service_account_jwts=ServiceAccountJwtConfig(
                audiences=("a",), keys_url=idp.url("/sa/{email}")
            )
        )
        assert _hd_principal(service_accounts, token(sa, sub=sa)) is None


def test_an_email_without_email_verified_is_refused_through_the_gateway(
    loop: LoopThread, tmp_path: Path, identity: Identity
) -> None:
    with running(loop, tmp_path / "default", identity, GRANTS) as stack:
        assert stack.get(email="kim@acme.example", email_verified=None) == "UNAUTHENTICATED"
        assert stack.get(email="kim@acme.example") == "OK"
        assert len(stack.upstream.calls()) == 1
    with running(loop, tmp_path / "vouching", identity, GRANTS, emails_verified=True) as stack:
        assert stack.get(email="kim@acme.example", email_verified=None) == "OK"
        assert stack.get(email="kim@acme.example", email_verified=False) == "UNAUTHENTICATED"


def test_hd_grants_domain_membership_only_from_a_trusted_issuer(
    loop: LoopThread, tmp_path: Path, identity: Identity
) -> None:
    outsider = {"email": "eve@elsewhere.example", "hd": "kim.example"}
    with running(loop, tmp_path / "plain", identity, GRANTS) as stack:
        assert stack.get(**outsider) == "PERMISSION_DENIED"
    with running(loop, tmp_path / "trusted", identity, GRANTS, trust_hosted_domain=True) as stack:
        assert stack.get(**outsider) == "OK"


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("emails_verified: yes-please", r"emails_verified': must be true or false"),
        ("email_verified: true", r"unknown key \(did you mean 'emails_verified'\?\)"),
        ("trust_hosted_domian: true", r"unknown key \(did you mean 'trust_hosted_domain'\?\)"),
    ],
    ids=["bad-value", "misspelt-emails-verified", "misspelt-trust-hosted-domain"],
)
def test_the_issuer_options_name_key_and_file(tmp_path: Path, field: str, expected: str) -> None:
    (tmp_path / "c.pem").write_text("x")
    path = tmp_path / "opsgate.yaml"
    path.write_text(f"upstream:\n  target: a:1\nauthentication:\n{ISSUER}      {field}\n")
    with pytest.raises(ConfigError, match=expected) as err:
        load_settings(path)
    assert str(err.value).startswith(f"{path}:8: key 'authentication.issuers[0].")
