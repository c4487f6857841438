"""Config loading: every mistake stops start-up with the file, line and key it concerns."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.config import documented_keys, load_settings
from gateway.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


AUTHENTICATION = """
authentication:
  issuers:
    - issuer: https://idp.example.com
      audiences: [opsgate]
      jwks_file: jwks.json
"""


AUTHORIZATION = """
authorization:
  policy_file: policy.yaml
"""


def _write(tmp_path: Path, text: str) -> Path:
    """Write a config; valid authentication and authorization sections are appended unless the
    text has its own (appended at the end, so the lines the cases expect do not move)."""
    (tmp_path / "jwks.json").write_text('{"keys": []}')
    (tmp_path / "policy.yaml").write_text("allow: []\n")
    if not text.startswith("-"):
        text += "" if "authentication" in text else AUTHENTICATION
        text += "" if "authorization" in text else AUTHORIZATION
    path = tmp_path / "opsgate.yaml"
    path.write_text(text)
    return path


def test_a_full_config_loads(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    path = _write(
        tmp_path,
        "listen: 0.0.0.0:9000\n"
        "upstream:\n  target: ops.internal:443\n  tls:\n    ca_file: ca.pem\n"
        "shutdown_grace_s: 2\nlog_level: debug\n",
    )
    settings = load_settings(path)
    assert settings.listen == "0.0.0.0:9000"
    assert settings.upstream.target == "ops.internal:443"
    assert settings.upstream.tls is not None
    assert settings.upstream.tls.ca_file == tmp_path / "ca.pem"
    assert settings.shutdown_grace_s == 2.0
    assert settings.log_level == "debug"


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "listen: 127.0.0.1:1\nupstream:\n  target: a:1\n")
    settings = load_settings(path, listen="127.0.0.1:2", upstream="b:2")
    assert (settings.listen, settings.upstream.target) == ("127.0.0.1:2", "b:2")


BAD_CONFIGS = [
    (
        "unknown-key",
        "upstream:\n  target: a:1\nlisen: x:1\n",
        r":3: key 'lisen': unknown key \(did you mean 'listen'\?\)",
    ),
    (
        "unknown-nested-key",
        "upstream:\n  target: a:1\n  tagret: b\n",
        r":3: key 'upstream.tagret': unknown key \(did you mean 'target'\?\)",
    ),
    ("missing-upstream", "listen: 127.0.0.1:1\n", r"key 'upstream': is required"),
    (
        "missing-authentication",
        "upstream:\n  target: a:1\nauthentication:\n",
        r"key 'authentication': must be a mapping",
    ),
    (
        "no-token-source",
        "upstream:\n  target: a:1\nauthentication:\n  issuers: []\n",
        r"key 'authentication': configures no way to authenticate",
    ),
    (
        "two-key-sources",
        "upstream:\n  target: a:1\nauthentication:\n  issuers:\n"
        "    - issuer: i\n      audiences: [a]\n      jwks_file: c.pem\n      jwks_uri: http://x\n",
        r"key 'authentication.issuers\[0\]': give only one of jwks_uri, jwks_file and discovery",
    ),
    (
        "no-key-source",
        "upstream:\n  target: a:1\nauthentication:\n  issuers:\n    - issuer: i\n      audiences: [a]\n",
        r"key 'authentication.issuers\[0\]': needs jwks_uri, jwks_file, discovery: true",
    ),
    (
        "hs256-refused",
        "upstream:\n  target: a:1\nauthentication:\n  issuers:\n"
        "    - issuer: i\n      audiences: [a]\n      jwks_file: c.pem\n      algorithms: [HS256, none]\n",
        r":8: key 'authentication.issuers\[0\].algorithms': unsupported or unsafe algorithm\(s\) \['HS256', 'none'\]",
    ),
    (
        "empty-audiences",
        "upstream:\n  target: a:1\nauthentication:\n  issuers:\n"
        "    - issuer: i\n      audiences: []\n      jwks_file: c.pem\n",
        r"key 'authentication.issuers\[0\].audiences': must list at least one value",
    ),
    (
        "issuer-typo",
        "upstream:\n  target: a:1\nauthentication:\n  issuers:\n"
        "    - issuer: i\n      audience: [a]\n      jwks_file: c.pem\n",
        r":6: key 'authentication.issuers\[0\].audience': unknown key \(did you mean 'audiences'\?\)",
    ),
    (
        "secret-env-unset",
        "upstream:\n  target: a:1\nauthentication:\n  issuers:\n"
        "    - issuer: i\n      audiences: [a]\n      introspection:\n        endpoint: http://x\n"
        "        client_id: c\n        client_secret_env: OPSGATE_TEST_UNSET_SECRET\n",
        r"environment variable OPSGATE_TEST_UNSET_SECRET is not set",
    ),
    (
        "identity-header-uppercase",
        "upstream:\n  target: a:1\nauthentication:\n  identity_header: X-User\n  issuers:\n"
        "    - issuer: i\n      audiences: [a]\n      jwks_file: c.pem\n",
        r"key 'authentication.identity_header': 'X-User' is not a lowercase header name",
    ),
    ("missing-target", "upstream: {}\n", r"key 'upstream.target': is required"),
    ("empty-target", "upstream:\n  target: ' '\n", r"key 'upstream.target': must not be empty"),
    (
        "bad-listen",
        "listen: localhost\nupstream:\n  target: a:1\n",
        r":1: key 'listen': 'localhost' is not HOST:PORT",
    ),
    (
        "port-out-of-range",
        "listen: h:70000\nupstream:\n  target: a:1\n",
        r"key 'listen': 'h:70000' is not HOST:PORT",
    ),
    (
        "string-for-number",
        "upstream:\n  target: a:1\nshutdown_grace_s: soon\n",
        r":3: key 'shutdown_grace_s': must be a number, got 'soon'",
    ),
    (
        "negative-grace",
        "upstream:\n  target: a:1\nshutdown_grace_s: -1\n",
        r"key 'shutdown_grace_s': must be 0 or more",
    ),
    (
        "bool-for-int",
        "upstream:\n  target: a:1\nmax_message_bytes: true\n",
        r"key 'max_message_bytes': must be a whole number",
    ),
    (
        "bad-choice",
        "upstream:\n  target: a:1\nlog_level: loud\n",
        r"key 'log_level': must be one of 'debug', 'info', 'warning', 'error', got 'loud'",
    ),
    (
        "missing-file",
        "upstream:\n  target: a:1\n  tls:\n    ca_file: nope.pem\n",
        r":4: key 'upstream.tls.ca_file': file '.*nope.pem' does not exist",
    ),
    ("not-a-mapping", "upstream: a:1\n", r"key 'upstream': must be a mapping"),
    ("top-level-list", "- a\n", r"the top level must be a mapping"),
    (
        "duplicate-key",
        "upstream:\n  target: a:1\nlisten: a:1\nlisten: b:2\n",
        r":4: key 'listen': appears twice",
    ),
    ("yaml-syntax", "upstream: [\n", r"not valid YAML"),
    (
        "impossible-date",
        "upstream:\n  target: a:1\nlog_level: 2024-02-30\n",
        r"holds a value that cannot be read",
    ),
    (
        "cert-without-key",
        "upstream:\n  target: a:1\n  tls:\n    cert_file: c.pem\n",
        r"key 'upstream.tls': cert_file and key_file must be given together",
    ),
    (
        "client-cert-without-ca",
        "upstream:\n  target: a:1\n"
        "tls:\n  cert_file: c.pem\n  key_file: c.pem\n  require_client_cert: true\n",
        r"key 'tls.require_client_cert': needs tls.client_ca_file",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_config_names_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "c.pem").write_text("x")
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    message = str(err.value)
    assert message.startswith(str(path))
    assert re.search(expected, message), message


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing.yaml: cannot be read"):
        load_settings(tmp_path / "missing.yaml")


def test_every_config_key_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [key for key, _, _ in documented_keys() if f"`{key}`" not in readme]
    assert not missing, f"README lacks config keys: {missing}"
