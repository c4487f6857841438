"""Regression tests for issue 15's smuggled headers, byte-order marks and deadline records."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.authorizer import PolicyHolder
from gateway.cli import main
from gateway.config import load_settings
from gateway.errors import ConfigError, StatusCode
from gateway.headers import GatewayHeaders, header_family
from gateway.outcome import cancellation_status
from gateway.pipeline import build_pipeline
from gateway.policy.loader import PolicyError, load_policy
from gateway.policy_reload import PolicyReloader
from gateway.rest.metadata import invocation_metadata
from gateway.sourcefile import load_text
from gateway.upstream.forwarder import UpstreamHeaders

BOM = "\ufeff"

# -- 6. No header the gateway sets can be smuggled


@pytest.mark.parametrize(
    ("key", "family"),
    [
        ("x-opsgate-principal", "x-opsgate-principal"),
        ("X-OPSGATE-PRINCIPAL", "x-opsgate-principal"),
        ("x_opsgate_principal", "x-opsgate-principal"),
        ("x-opsgate-principal-bin", "x-opsgate-principal"),
        ("X_Opsgate_Principal_BIN", "x-opsgate-principal"),
        ("x-opsgate-principal-bin-bin", "x-opsgate-principal"),
        ("x-opsgate-principal_bin-bin", "x-opsgate-principal"),
        ("x-bin", "x"),
        ("-bin", ""),
        ("binary", "binary"),
    ],
    ids=[
        "exact",
        "upper",
        "underscore",
        "bin",
        "mixed-case-underscore-bin",
        "bin-bin",
        "underscore-bin-bin",
        "short",
        "only-bin",
        "bin-prefix-is-a-name",
    ],
)
def test_header_family_folds_every_spelling_a_lenient_server_folds(key: str, family: str) -> None:
    assert header_family(key) == family


@pytest.mark.parametrize(
    ("identity_header", "key", "smuggled"),
    [
        ("x-opsgate-principal", "x-opsgate-principal", True),
        ("x-opsgate-principal", "x_opsgate_principal", True),
        ("x-opsgate-principal", "x-opsgate-principal-bin", True),
        ("x-team-principal", "x_team_principal_bin", True),
        ("x-team-principal", "x-opsgate-principal", True),  # the default name stays reserved
        (None, "x_opsgate_principal", True),
        ("x-team-principal", "x_opsgate_policy_etag", True),  # the gateway's own namespace
        ("x-opsgate-principal", "x-request-id", True),
        ("x-opsgate-principal", "x_request_id-bin", True),
        ("x-opsgate-principal", "x-server-timeout", True),
        ("x-opsgate-principal", "authorization", False),  # the credential authn reads
        ("x-opsgate-principal", "authorization-bin", True),
        ("x-opsgate-principal", "authorization_bin", True),
        ("x-opsgate-principal", "user-agent", False),  # the audit record's user agent
        ("x-opsgate-principal", "user_agent", True),
        ("x-opsgate-principal", "host-bin", True),
        ("x-opsgate-principal", "grpc_timeout", True),
        ("x-opsgate-principal", "te-bin", True),
        ("x-opsgate-principal", "x-team", False),
        ("x-opsgate-principal", "x_team_bin", False),
        ("x-opsgate-principal", "x-goog-request-params", False),
        ("x-opsgate-principal", "traceparent", False),
    ],
    ids=[
        "identity",
        "identity-underscore",
        "identity-bin",
        "custom-identity-underscore-bin",
        "default-identity-under-custom",
        "default-identity-when-none-configured",
        "own-namespace",
        "request-id",
        "request-id-underscore-bin",
        "server-timeout",
        "authorization-exact",
        "authorization-bin",
        "authorization-underscore-bin",
        "user-agent-exact",
        "user-agent-underscore",
        "host-bin",
        "grpc-timeout-underscore",
        "te-bin",
        "own-header",
        "own-header-underscore-bin",
        "request-params",
        "traceparent",
    ],
)
def test_smuggled_keys(identity_header: str | None, key: str, smuggled: bool) -> None:
    assert GatewayHeaders(identity_header).smuggled(key) is smuggled


def test_without_smuggled_keeps_the_same_tuple_when_nothing_is_smuggled() -> None:
    headers = GatewayHeaders()
    clean = (("authorization", "Bearer t"), ("x-team", "a"))
    assert headers.without_smuggled(clean) is clean
    assert headers.without_smuggled((*clean, ("x_opsgate_principal", "forged"))) == clean


@pytest.mark.parametrize("forward_authorization", [False, True], ids=["dropped", "forwarded"])
def test_upstream_gets_one_credential_and_no_smuggled_key(forward_authorization: bool) -> None:
    headers = UpstreamHeaders(
        forward_authorization=forward_authorization, identity_header="x-opsgate-principal"
    )
    sent = (
        ("authorization", "Bearer t"),
        ("authorization-bin", b"other"),
        ("x-opsgate-principal-bin", b"forged"),
        ("x_request_id", "mine"),
        ("host", "internal.example"),
        ("grpc-foo", "x"),
        ("x-team", "kept"),
    )
    expected = (("authorization", "Bearer t"),) if forward_authorization else ()
    assert headers.outgoing(sent) == (*expected, ("x-team", "kept"))  # no call: no identity


def test_rest_door_drops_every_spelling_whatever_the_case() -> None:
    headers = [
        ("X-Opsgate-Principal", "forged"),
        ("X_OPSGATE_PRINCIPAL", "forged"),
        ("X-Team-Principal-Bin", "Zm9yZ2Vk"),
        ("X_Request_Id", "mine"),
        ("x-server-timeout-bin", "MQ=="),
        ("Authorization-Bin", "dA=="),
        ("Authorization", "Bearer t"),
        ("X-Team", "kept"),
    ]
    assert invocation_metadata(headers, GatewayHeaders("x-team-principal")) == (
        ("authorization", "Bearer t"),
        ("x-team", "kept"),
    )


# -- 7. One reading of a policy file: no byte-order mark but as the first character

POLICY = (
    "allow:\n"
    "  - resource: projects/acme\n"
    "    bindings:\n"
    "      - role: roles/contactcenterinsights.viewer\n"
    '        members: [user:alice@acme.example, "group:ops@acme.example"]\n'
)
JSON_POLICY = json.dumps(
    {
        "allow": [
            {
                "resource": "projects/acme",
                "bindings": [
                    {"role": "roles/contactcenterinsights.viewer", "members": ["user:a@acme.ex"]}
                ],
            }
        ]
    },
    indent=2,
)

Placement = Callable[[str], str]


def _at(line: int, before: str) -> Placement:
    """Puts a BOM on `line` (1-based) just before the first `before` there."""

    def place(text: str) -> str:
        lines = text.split("\n")
        assert before in lines[line - 1], f"line {line} has no {before!r}"
        lines[line - 1] = lines[line - 1].replace(before, BOM + before, 1)
        return "\n".join(lines)

    return place


# (id, placement, the line it is refused on, or None where it is accepted)
POLICY_BOMS: list[tuple[str, Placement, int | None]] = [
    ("start", lambda t: BOM + t, None),
    ("doubled-at-start", lambda t: BOM + BOM + t, 1),
    ("after-document-start", lambda t: "---\n" + BOM + t, 2),
    ("after-bom-and-document-start", lambda t: BOM + "---\n" + BOM + t, 2),
    ("start-of-a-later-line", _at(3, "bindings"), 3),
    ("inside-a-key", _at(2, "ource"), 2),
    ("inside-a-plain-value", _at(2, "acme"), 2),
    ("inside-a-quoted-value", _at(5, '@acme.example"]'), 5),
    ("in-a-flow-sequence", _at(5, "user:"), 5),
    ("end-of-file", lambda t: t + BOM, 6),
]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _refused_on(error: ConfigError) -> int | None:
    assert "byte-order mark (U+FEFF)" in str(error)
    return error.line


@pytest.mark.parametrize(
    ("placement", "line"), [c[1:] for c in POLICY_BOMS], ids=[c[0] for c in POLICY_BOMS]
)
def test_policy_with_a_bom_is_refused_with_its_line(
    tmp_path: Path, placement: Placement, line: int | None
) -> None:
    path = _write(tmp_path, "policy.yaml", placement(POLICY))
    if line is None:
        assert load_policy(path).bindings
        return
    with pytest.raises(PolicyError) as refused:
        load_policy(path)
    assert refused.value.source == str(path)
    assert _refused_on(refused.value) == line


@pytest.mark.parametrize(
    ("name", "placement", "line"),
    [
        ("policy.json", lambda t: BOM + t, None),
        ("policy.json", lambda t: BOM + BOM + t, 1),
        ("policy.json", _at(2, '"allow"'), 2),  # the loader's own JSON reader refuses it
        ("policy.yaml", _at(2, '"allow"'), 2),
        pytest.param(
            "policy.json",
            _at(4, "projects"),
            4,
        ),
    ],
    ids=["start", "doubled", "between-tokens", "between-tokens-yaml-name", "in-a-string"],
)
def test_json_policy_with_a_bom(
    tmp_path: Path, name: str, placement: Placement, line: int | None
) -> None:
    path = _write(tmp_path, name, placement(JSON_POLICY))
    if line is None:
        assert load_policy(path).bindings
        return
    with pytest.raises(PolicyError) as refused:
        load_policy(path)
    assert (refused.value.source, refused.value.line) == (str(path), line)


def _config_files(tmp_path: Path) -> tuple[Path, Path]:
    return (
        _write(tmp_path, "policy.yaml", POLICY),
        _write(tmp_path, "jwks.json", '{"keys": []}'),
    )


def _config(tmp_path: Path) -> str:
    policy, jwks = _config_files(tmp_path)
    return (
        "listen: 127.0.0.1:0\n"
        "upstream:\n"
        "  target: 127.0.0.1:1\n"
        "authentication:\n"
        "  issuers:\n"
        f'    - {{issuer: "https://idp.example", audiences: [a], jwks_file: "{jwks}"}}\n'
        "authorization:\n"
        f"  policy_file: {policy}\n"
    )


def _json_config(tmp_path: Path) -> str:
    policy, jwks = _config_files(tmp_path)
    issuer = {"issuer": "https://idp.example", "audiences": ["a"], "jwks_file": str(jwks)}
    config = {
        "listen": "127.0.0.1:0",
        "upstream": {"target": "127.0.0.1:1"},
        "authentication": {"issuers": [issuer]},
        "authorization": {"policy_file": str(policy)},
    }
    return json.dumps(config, indent=2)


CONFIG_BOMS: list[tuple[str, Placement, int | None]] = [
    ("start", lambda t: BOM + t, None),
    ("doubled-at-start", lambda t: BOM + BOM + t, 1),
    ("after-document-start", lambda t: "---\n" + BOM + t, 2),
    ("inside-a-key", _at(2, "stream"), 2),
    ("inside-a-value", _at(3, "1:1"), 3),
    ("in-a-flow-mapping", _at(6, "audiences"), 6),
    ("inside-a-quoted-value", _at(6, "idp."), 6),
]


@pytest.mark.parametrize(
    ("placement", "line"), [c[1:] for c in CONFIG_BOMS], ids=[c[0] for c in CONFIG_BOMS]
)
def test_config_with_a_bom_is_refused_with_its_line(
    tmp_path: Path, placement: Placement, line: int | None
) -> None:
    path = _write(tmp_path, "opsgate.yaml", placement(_config(tmp_path)))
    if line is None:
        assert load_settings(path).forwarding.target == "127.0.0.1:1"
        return
    with pytest.raises(ConfigError) as refused:
        load_settings(path)
    assert refused.value.source == str(path)
    assert _refused_on(refused.value) == line


JSON_CONFIG_BOMS: list[tuple[str, Placement, int | None]] = [
    ("start", lambda t: BOM + t, None),
    ("doubled-at-start", lambda t: BOM + BOM + t, 1),
    ("between-tokens", _at(3, '"upstream"'), 3),
    ("inside-a-string", _at(9, "idp."), 9),
]


@pytest.mark.parametrize(
    ("placement", "line"),
    [c[1:] for c in JSON_CONFIG_BOMS],
    ids=[c[0] for c in JSON_CONFIG_BOMS],
)
def test_json_config_with_a_bom(tmp_path: Path, placement: Placement, line: int | None) -> None:
    path = _write(tmp_path, "opsgate.json", placement(_json_config(tmp_path)))
    if line is None:
        assert load_settings(path).forwarding.target == "127.0.0.1:1"
        return
    with pytest.raises(ConfigError) as refused:
        load_settings(path)
    assert _refused_on(refused.value) == line


def test_policy_check_strict_refuses_a_bom_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "policy.yaml", "---\n" + BOM + POLICY)
    assert main(["policy", "check", "--strict", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:2: error: " in out and "U+FEFF" in out


def test_serve_start_up_refuses_a_policy_with_a_bom(tmp_path: Path) -> None:
    config = _write(tmp_path, "opsgate.yaml", _config(tmp_path))
    settings = load_settings(config)
    settings.authorization.policy_file.write_text(BOM + BOM + POLICY, encoding="utf-8")
    with pytest.raises(PolicyError) as refused:
        build_pipeline(settings)
    assert refused.value.line == 1


def test_hot_reload_rejects_a_policy_with_a_bom_and_keeps_the_last(tmp_path: Path) -> None:
    path = _write(tmp_path, "policy.yaml", POLICY)
    holder = PolicyHolder(load_policy(path))
    good = holder.current.etag
    reloader = PolicyReloader(holder, path, load_policy, interval_s=0.01)
    path.write_text(POLICY.replace("user:alice", BOM + "user:mallory"), encoding="utf-8")
    assert not asyncio.run(reloader.reload("SIGHUP"))
    assert holder.current.etag == good and reloader.rejected == 1


KEYS = st.sampled_from(["a", "b", "members", "x y", "1"])
VALUES = st.recursive(
    st.one_of(st.none(), st.integers(0, 9), st.sampled_from(["s", "user:a@b.example", "x y"])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8,
)
PIECES = st.sampled_from([BOM, BOM + BOM, "---\n", "---\n" + BOM, "\n" + BOM, "'", '"'])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.dictionaries(KEYS, VALUES, min_size=1, max_size=3),
    flow=st.sampled_from([None, True, False]),
    splices=st.lists(st.tuples(st.integers(0, 10**4), PIECES), min_size=1, max_size=3),
)
def test_the_gateway_never_reads_a_file_otherwise_than_plain_pyyaml(
    data: dict[str, Any], flow: bool | None, splices: list[tuple[int, str]]
) -> None:
    """What the gateway reads, a review tool's plain `yaml.safe_load` reads the same (or one of
    them refuses the file)."""
    text = yaml.safe_dump(data, default_flow_style=flow, sort_keys=False)
    for position, piece in splices:
        at = position % (len(text) + 1)
        text = text[:at] + piece + text[at:]
    try:
        ours = load_text(text, "f.yaml")
    except ConfigError:
        return
    try:
        theirs = yaml.load(text, Loader=yaml.SafeLoader)  # PyYAML's own reader, not libyaml
    except yaml.YAMLError:
        return
    assert ours == theirs


# -- 8. The audit record names the deadline when the deadline ended the call

DEADLINE = StatusCode.DEADLINE_EXCEEDED
CANCELLED = StatusCode.CANCELLED


@pytest.mark.parametrize(
    ("remaining", "elapsed", "code"),
    [
        (None, 5.0, CANCELLED),
        (0.0, 0.3, DEADLINE),
        (-0.02, 0.3, DEADLINE),
        (0.007, 0.293, DEADLINE),  # a client reset seen a few ms before our copy ran out
        (0.1, 0.0, DEADLINE),
        (0.2, 0.1, CANCELLED),
        (29.8, 0.2, CANCELLED),  # a client that walked away early
        (9.5, 3600.0, DEADLINE),  # grpc-timeout rounds an hour's deadline up by up to 10 s
        (60.0, 3540.0, CANCELLED),
    ],
    ids=[
        "no-deadline",
        "expired",
        "overdue",
        "reset-just-before-ours",
        "within-the-fixed-tolerance",
        "beyond-the-tolerance",
        "well-before",
        "long-deadline-rounded-up",
        "a-minute-before-an-hour",
    ],
)
def test_cancellation_status(remaining: float | None, elapsed: float, code: StatusCode) -> None:
    assert cancellation_status(remaining, elapsed)[0] is code
