"""What the benchmarked servers are given: signing keys and their JWKS, tokens, policy, configs.

The identity provider is three local keys (RS256, ES256, EdDSA) published in one JWKS file that
the gateway reads (`jwks_file`). Tokens are signed here; many at once are signed by a pool of
processes straight into files, one per line, so a million of them take seconds, not minutes.
"""

from __future__ import annotations

import base64
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from benchmarks import policygen
from gateway.testing.tokens import SigningKey, ec_key, ed_key, jwks, rsa_key

ISSUER = "https://idp.bench.opsgate"
AUDIENCE = "opsgate-bench"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# The warm caller, and the team group every allowed benchmark caller carries in its token.
WARM_EMAIL = "bench@acme.example"
TEAM_GROUP = "bench-team@acme.example"
# Policy: bench-callers (which contains bench-team) may view every operation in acme-prod.
CALLERS_GROUP = "bench-callers@acme.example"
GRANTED_PROJECT = "projects/acme-prod"
TOKEN_LIFETIME_S = 4 * 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _private_pem(key: SigningKey) -> bytes:
    return key.private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Signer:
    """Signs JWS compact tokens with one key, without pyjwt's per-call overhead."""

    def __init__(self, algorithm: str, kid: str, private: Any) -> None:
        self.algorithm = algorithm
        header = {"alg": algorithm, "kid": kid, "typ": "JWT"}
        self._header = _b64(json.dumps(header, separators=(",", ":")).encode())
        self._private = private

    @classmethod
    def from_pem(cls, algorithm: str, kid: str, pem: bytes) -> Signer:
        return cls(algorithm, kid, serialization.load_pem_private_key(pem, password=None))

    def sign(self, claims: dict[str, Any]) -> str:
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{self._header}.{payload}".encode("ascii")
        private = self._private
        if isinstance(private, rsa.RSAPrivateKey):
            signature = private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(private, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(private.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            assert isinstance(private, ed25519.Ed25519PrivateKey)
            signature = private.sign(signing_input)
        return f"{signing_input.decode('ascii')}.{_b64(signature)}"


def claims_for(email: str, groups: list[str] | None, jti: str, now: int) -> dict[str, Any]:
    found: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": email,
        "email": email,
        "email_verified": True,
        "iat": now,
        "exp": now + TOKEN_LIFETIME_S,
        "scope": SCOPE,
        "jti": jti,
    }
    if groups:
        found["groups"] = groups
    return found


@dataclass(frozen=True)
class TokenBatch:
    """Parameters of one pool job: tokens start..stop-1 of a run, written to `path`."""

    algorithm: str
    kid: str
    pem: bytes
    email_pattern: str  # "{i}" is replaced by the token's number (modulo `principals`)
    groups: tuple[str, ...]
    principals: int  # 0: every token its own principal
    start: int
    stop: int
    path: str


def _sign_batch(batch: TokenBatch) -> str:
    signer = Signer.from_pem(batch.algorithm, batch.kid, batch.pem)
    now = int(time.time())
    groups = list(batch.groups) or None
    with open(batch.path, "w", encoding="ascii") as out:
        for i in range(batch.start, batch.stop):
            who = i % batch.principals if batch.principals else i
            email = batch.email_pattern.replace("{i}", str(who))
            out.write(signer.sign(claims_for(email, groups, f"t{i}", now)))
            out.write("\n")
    return batch.path


@dataclass
class Identity:
    """The benchmark's identity provider: three signing keys and the JWKS file trusting them."""

    directory: Path
    keys: dict[str, SigningKey]

    @classmethod
    def create(cls, directory: Path) -> Identity:
        keys = {
            "RS256": rsa_key("RS256", kid="bench-rs256"),
            "ES256": ec_key("ES256", kid="bench-es256"),
            "EdDSA": ed_key(kid="bench-eddsa"),
        }
        identity = cls(directory, keys)
        identity.jwks_file.write_text(json.dumps(jwks(*keys.values())))
        return identity

    @property
    def jwks_file(self) -> Path:
        return self.directory / "jwks.json"

    def signer(self, algorithm: str) -> Signer:
        key = self.keys[algorithm]
        return Signer(algorithm, key.kid, key.private)

    def token(
        self, email: str = WARM_EMAIL, groups: list[str] | None = None, algorithm: str = "RS256"
    ) -> str:
        groups = [TEAM_GROUP] if groups is None else groups
        return self.signer(algorithm).sign(
            claims_for(email, groups, f"one-{time.time_ns()}", int(time.time()))
        )

    def sign_many(
        self,
        name: str,
        count: int,
        *,
        algorithm: str,
        email_pattern: str,
        groups: tuple[str, ...] = (TEAM_GROUP,),
        principals: int = 0,
        first: int = 0,
        processes: int | None = None,
    ) -> list[Path]:
        """`count` distinct tokens (numbers first..first+count-1) in files, one per line.

        Every token is distinct (its own jti); with `principals`, they name only that many
        different callers, in turn.
        """
        processes = max(1, min(processes or os.cpu_count() or 1, 8))
        chunk = max(1, -(-count // processes))
        key = self.keys[algorithm]
        pem = _private_pem(key)
        batches = [
            TokenBatch(
                algorithm,
                key.kid,
                pem,
                email_pattern,
                groups,
                principals,
                start,
                min(start + chunk, first + count),
                str(self.directory / f"{name}-{index}.tokens"),
            )
            for index, start in enumerate(range(first, first + count, chunk))
        ]
        if len(batches) == 1:
            return [Path(_sign_batch(batches[0]))]
        # spawn, not fork: the harness may have gRPC's threads running.
        with ProcessPoolExecutor(len(batches), mp_context=get_context("spawn")) as pool:
            return [Path(path) for path in pool.map(_sign_batch, batches)]


def bench_policy(bindings: int) -> dict[str, Any]:
    """policygen's realistic policy plus the grant the benchmark's callers live by.

    bench-team (in every allowed caller's token) is inside bench-callers (a static group),
    which holds the viewer role on acme-prod: one level of nesting, as teams usually have.
    """
    data = policygen.generate(bindings)
    data["allow"].append(
        {
            "resource": GRANTED_PROJECT,
            "bindings": [{"role": policygen.VIEWER, "members": [f"group:{CALLERS_GROUP}"]}],
        }
    )
    data["groups"][CALLERS_GROUP] = [f"group:{TEAM_GROUP}"]
    return data


def write_policy(directory: Path, bindings: int) -> Path:
    path = directory / f"policy-{bindings}.yaml"
    if not path.exists():
        path.write_text(policygen.to_yaml(bench_policy(bindings)))
    return path


# Routes WaitOperation (as tests/support/full_profile.yaml does), for the held-calls benchmark.
WAIT_PROFILE = """\
service: contactcenterinsights.googleapis.com
routes:
  GetOperation:
    - {pattern: "projects/*/locations/*/operations/*", \
permission: contactcenterinsights.operations.get}
  WaitOperation:
    - {pattern: "projects/*/locations/*/operations/*", \
permission: contactcenterinsights.operations.get}
"""


def write_gateway_config(
    directory: Path,
    name: str,
    *,
    listen: str,
    upstream: str | None,
    identity: Identity,
    policy: Path,
    profile_file: Path | None = None,
    metrics_listen: str | None = None,
    rest_listen: str | None = None,
    envoy: bool = False,
    envoy_http_listen: str | None = None,
) -> Path:
    """A config for the full pipeline: JWKS-file issuer, policy, audit file with fsync interval.

    Without `upstream` it is a library-mode config (no upstream section), or with `envoy` the
    config of opsgate as Envoy's external authorizer only; with `rest_listen` the REST/JSON door
    listens there too.
    """
    lines = [f"listen: {listen}"]
    if upstream is not None:
        lines += ["upstream:", f"  target: {upstream}"]
    lines += [
        "authentication:",
        "  issuers:",
        f"    - issuer: {ISSUER}",
        f"      audiences: [{AUDIENCE}]",
        f"      jwks_file: {identity.jwks_file}",
        "      groups_claim: groups",
        "authorization:",
        f"  policy_file: {policy}",
    ]
    if profile_file is not None:
        lines.append(f"  profile_file: {profile_file}")
    lines += [
        "audit:",
        "  sink: file",
        "  file:",
        f"    path: {directory / f'{name}-audit.jsonl'}",
        "    fsync: interval",
        "    fsync_interval_s: 1.0",
        "log_level: warning",
    ]
    if metrics_listen is not None:
        lines += ["metrics:", f"  listen: {metrics_listen}"]
    if rest_listen is not None:
        lines += ["rest:", f"  listen: {rest_listen}"]
    if envoy:
        lines += ["envoy:", "  max_body_bytes: 65536"]
        if envoy_http_listen is not None:  # Envoy asks over HTTP (else the gRPC Check)
            lines.append(f"  http_listen: {envoy_http_listen}")
    path = directory / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_nginx_conf(directory: Path, port: int, upstream_port: int, version: str) -> Path:
    """A minimal grpc_pass proxy: one worker, h2c listener, upstream keepalive, no access log."""
    root = directory / "nginx"
    root.mkdir(exist_ok=True)
    root.chmod(0o755)  # its worker may run as nobody
    new_http2 = tuple(int(part) for part in version.split(".")[:3]) >= (1, 25, 1)
    listen = (
        f"listen 127.0.0.1:{port};\n    http2 on;"
        if new_http2
        else (f"listen 127.0.0.1:{port} http2;")
    )
    text = f"""\
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {root}/body;
  proxy_temp_path {root}/proxy;
  upstream opsgate_bench_upstream {{
    server 127.0.0.1:{upstream_port};
    keepalive 128;
  }}
  server {{
    {listen}
    keepalive_requests 100000000;
    location / {{
      grpc_pass grpc://opsgate_bench_upstream;
    }}
  }}
}}
"""
    path = root / "nginx.conf"
    path.write_text(text)
    return path
