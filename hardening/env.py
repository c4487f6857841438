"""The world the attacks run in: signing keys, tokens, config files (ports and the loop thread
are gateway.testing's)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.testing.tokens import SigningKey, claims, ec_key, jwks, rsa_key

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_POLICY = REPO / "policies" / "example.yaml"
ISSUER = "https://idp.hardening.test"
AUDIENCE = "opsgate-hardening"
CLOUD_SCOPE = "https://www.googleapis.com/auth/cloud-platform"

_serial = itertools.count(1)


@dataclass
class Keys:
    """The issuer's signing keys: the one in use, one rotated in later, and an EC key."""

    primary: SigningKey = field(default_factory=lambda: rsa_key(kid="hk-primary"))
    rotated: SigningKey = field(default_factory=lambda: rsa_key(kid="hk-rotated", fresh=True))
    ec: SigningKey = field(default_factory=lambda: ec_key("ES256", kid="hk-ec"))
    stranger: SigningKey = field(default_factory=lambda: ec_key("ES256", kid="hk-never-published"))

    def published(self, *which: SigningKey) -> dict[str, Any]:
        """A JWKS document with `which` (default: primary and ec)."""
        return jwks(*(which or (self.primary, self.ec)))


def mint(key: SigningKey, headers: dict[str, Any] | None = None, **extra: Any) -> str:
    """A real token from this world's issuer; each is distinct (a fresh jti)."""
    body = claims(ISSUER, AUDIENCE, jti=f"h{next(_serial)}-{uuid.uuid4().hex[:8]}", **extra)
    return key.sign(body, headers)


@dataclass
class Workdir:
    """A scratch directory for one world: config, policy copy, audit files, logs."""

    path: Path

    def sub(self, name: str) -> Workdir:
        child = self.path / name
        child.mkdir(parents=True, exist_ok=True)
        return Workdir(child)

    def policy_copy(self, name: str = "policy.yaml") -> Path:
        target = self.path / name
        shutil.copyfile(EXAMPLE_POLICY, target)
        return target

    def write(self, name: str, text: str) -> Path:
        target = self.path / name
        target.write_text(text)
        return target


def replace_file(path: Path, data: str | bytes) -> None:
    """Write the way a ConfigMap update or an editor's save does: a new file renamed in."""
    fresh = path.with_name(path.name + f".tmp{os.getpid()}")
    if isinstance(data, bytes):
        fresh.write_bytes(data)
    else:
        fresh.write_text(data)
    os.replace(fresh, path)


def gateway_config(
    directory: Workdir,
    *,
    upstream: str,
    jwks_url: str,
    policy: Path,
    audit_file: Path,
    issuer: dict[str, Any] | None = None,
    more_issuers: list[dict[str, Any]] | None = None,
    authentication: dict[str, Any] | None = None,
    authorization: dict[str, Any] | None = None,
    audit: dict[str, Any] | None = None,
    audit_file_settings: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    name: str = "opsgate.yaml",
    rest: bool = True,
) -> Path:
    """An `opsgate serve` config: this world's issuer (JWKS over HTTP), a policy, a file audit;
    `more_issuers` are complete entries for other issuers."""
    issuer_entry: dict[str, Any] = {
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "jwks_uri": jwks_url,
        "groups_claim": "groups",
        "max_lifetime_s": 3600,
        "jwks_min_refresh_interval_s": 1,
        **(issuer or {}),
    }
    config: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "upstream": {"target": upstream},
        "authentication": {
            "issuers": [issuer_entry, *(more_issuers or ())],
            **(authentication or {}),
        },
        "authorization": {"policy_file": str(policy), **(authorization or {})},
        "audit": {
            "sink": "file",
            "file": {"path": str(audit_file), "fsync": "never", **(audit_file_settings or {})},
            **(audit or {}),
        },
        "log_format": "json",
        "log_level": "info",
        **(extra or {}),
    }
    if rest and rest_door_configurable():
        config["rest"] = {"listen": "127.0.0.1:0"}
    path = directory.path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def rest_door_configurable() -> bool:
    """Whether this tree's config has the REST/JSON door (`rest: {listen: ...}`)."""
    from gateway.config import Settings

    return "rest" in getattr(Settings, "__dataclass_fields__", {})


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(interval)


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
