"""The opsgate.yaml and policy.yaml each kustomization ships load as the gateway loads them.

The files are taken from the rendered ConfigMap (what the pods actually mount), the container
paths (/etc/opsgate/..., /var/run/secrets/...) are rewritten into tmp_path, the Secret files are
stand-ins, and then load_settings, the service profile and the policy are loaded exactly as
`opsgate serve` does at start-up. A key renamed in gateway/config.py, or a policy the loader
rejects, fails here instead of in a crash-looping pod.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.policy.loader import load_policy
from gateway.profile import load_profile
from tests.deploy.kustomize_lite import find
from tests.deploy.renders import CONFIG_MAP, KUSTOMIZATIONS, render

# An absolute container path (not the tail of a longer path, such as the tmp_path copies).
CONTAINER_PATH = re.compile(r"(?<![\w.-])(?:/etc/opsgate|/var/run/secrets)/[\w./-]+")


def _materialise(name: str, tmp_path: Path) -> Path:
    """Write the ConfigMap's files and stand-in secrets under tmp_path; return the config path."""
    data: dict[str, str] = find(render(name), "ConfigMap", CONFIG_MAP)["data"]
    config_dir = tmp_path / "etc" / "opsgate"
    config_dir.mkdir(parents=True)

    def local(path: str) -> Path:
        return tmp_path / path.lstrip("/")

    text = data["opsgate.yaml"]
    for path in sorted(set(CONTAINER_PATH.findall(text))):
        target = local(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        key = path.removeprefix("/etc/opsgate/")
        # ConfigMap files as shipped; Secrets are the platform team's, so any content will do.
        target.write_text(data[key] if path.startswith("/etc/opsgate/") else "stand-in\n")
    rewritten = CONTAINER_PATH.sub(lambda match: str(local(match.group(0))), text)
    assert not CONTAINER_PATH.search(rewritten)
    config = config_dir / "opsgate.yaml"
    config.write_text(rewritten)
    return config


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_the_shipped_config_and_policy_load_like_opsgate_serve_loads_them(
    name: str, tmp_path: Path
) -> None:
    """load_settings accepts the config; the profile and the policy it names load cleanly."""
    settings = load_settings(_materialise(name, tmp_path))
    assert settings.upstream is not None
    assert settings.authorization.policy_file == tmp_path / "etc" / "opsgate" / "policy.yaml"
    assert settings.metrics is not None
    assert settings.health is not None  # the probes' port (test_manifests checks where)
    profile = load_profile(settings.authorization.profile, settings.authorization.profile_file)
    policy = load_policy(settings.authorization.policy_file, known_permissions=profile.permissions)
    assert policy.etag


def test_a_config_key_the_gateway_does_not_know_is_caught(tmp_path: Path) -> None:
    """The check above is real: drift between manifests and config schema fails the load."""
    config = _materialise("base", tmp_path)
    config.write_text(config.read_text() + "shutdown_grace_seconds: 20\n")
    with pytest.raises(ConfigError, match="shutdown_grace_seconds"):
        load_settings(config)
