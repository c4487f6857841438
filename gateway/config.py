"""Settings: the frozen configuration read once at start-up from a YAML file and flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gateway.authn.settings import AuthnSettings, client_secret
from gateway.configschema import (
    Binder,
    KiB,
    MiB,
    OutputFile,
    check_host_port,
    check_not_empty,
    check_not_negative,
    check_positive,
    doc,
)
from gateway.configschema import documented_keys as schema_keys
from gateway.envoy.settings import EnvoySettings
from gateway.errors import ConfigError
from gateway.rest.settings import RestSettings
from gateway.routing import METHODS_BY_PATH
from gateway.sourcefile import LineMap, load_file


@dataclass(frozen=True, slots=True)
class ServerTls:
    """TLS on the gateway's own listener."""

    cert_file: Path = field(metadata=doc("PEM certificate chain the gateway presents"))
    key_file: Path = field(metadata=doc("PEM private key for cert_file"))
    client_ca_file: Path | None = field(
        default=None, metadata=doc("PEM CA bundle for verifying client certificates (mTLS)")
    )
    require_client_cert: bool = field(
        default=False, metadata=doc("refuse connections without a valid client certificate")
    )


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """TLS (and optionally mTLS) from the gateway to the upstream."""

    ca_file: Path | None = field(
        default=None, metadata=doc("PEM CA bundle to verify the upstream; system roots if unset")
    )
    cert_file: Path | None = field(
        default=None, metadata=doc("PEM client certificate chain for mTLS to the upstream")
    )
    key_file: Path | None = field(default=None, metadata=doc("PEM private key for cert_file"))
    server_name: str | None = field(
        default=None, metadata=doc("name to verify in the upstream certificate, if not the host")
    )


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """Where allowed calls are forwarded."""

    target: str = field(
        metadata=doc("gRPC target of the Operations server, e.g. ops.internal:443", check_not_empty)
    )
    tls: UpstreamTls | None = field(
        default=None, metadata=doc("set to use TLS to the upstream; omit for plaintext")
    )
    keepalive_time_s: float = field(
        default=30.0, metadata=doc("seconds between HTTP/2 keepalive pings", check_positive)
    )


@dataclass(frozen=True, slots=True)
class AuthzSettings:
    """Which policy decides calls, and how calls map to permissions."""

    policy_file: Path = field(metadata=doc("the IAM-shaped policy file (YAML or JSON)"))
    profile: str = field(
        default="contactcenterinsights",
        metadata=doc("built-in service profile mapping methods to permissions"),
    )
    profile_file: Path | None = field(
        default=None, metadata=doc("a custom service profile (YAML); overrides `profile`")
    )
    allow_anonymous: bool = field(
        default=False,
        metadata=doc("admit calls with no credentials as anonymous (only allUsers matches them)"),
    )
    decision_cache_size: int = field(
        default=100000, metadata=doc("decisions remembered per policy version", check_positive)
    )
    reload_interval_s: float = field(
        default=2.0,
        metadata=doc("how often the policy file is checked for changes; 0 disables watching"),
    )
    dry_run_policy_file: Path | None = field(
        default=None,
        metadata=doc("a candidate policy evaluated alongside; differences go to audit records"),
    )


@dataclass(frozen=True, slots=True)
class AuditFileSettings:
    """The audit file: size-based rotation and when to fsync."""

    path: OutputFile = field(metadata=doc("file the records are appended to (JSON lines)"))
    max_bytes: int = field(
        default=100 * MiB, metadata=doc("rotate when the file would grow past this; 0 never")
    )
    backups: int = field(default=10, metadata=doc("rotated files kept: PATH.1 ... PATH.N"))
    fsync: Literal["always", "interval", "never"] = field(
        default="interval",
        metadata=doc("fsync after every write, every fsync_interval_s, or never"),
    )
    fsync_interval_s: float = field(
        default=1.0, metadata=doc("seconds between fsyncs with fsync: interval", check_positive)
    )


@dataclass(frozen=True, slots=True)
class AuditCloudLoggingSettings:
    """The cloud_logging sink: Cloud Logging's WriteLogEntries, with the gateway's credentials."""

    endpoint: str | None = field(
        default=None,
        metadata=doc(
            "HOST:PORT of the Logging API; default Google's (logging.googleapis.com:443)",
            check_host_port,
        ),
    )
    insecure: bool = field(
        default=False,
        metadata=doc("plaintext and no credentials, for a local emulator or test server"),
    )
    timeout_s: float = field(
        default=10.0,
        metadata=doc("seconds one WriteLogEntries request may take", check_positive),
    )


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """Where the audit records go and what happens when they cannot be written."""

    sink: Literal["stdout", "file", "cloud_logging"] = field(
        default="stdout",
        metadata=doc(
            "stdout (JSON lines), file, or cloud_logging (LogEntries with an AuditLog "
            "protoPayload, through Cloud Logging's API)"
        ),
    )
    file: AuditFileSettings | None = field(
        default=None, metadata=doc("the file sink's settings (required with sink: file)")
    )
    cloud_logging: AuditCloudLoggingSettings = field(
        default_factory=AuditCloudLoggingSettings,
        metadata=doc("the cloud_logging sink's settings"),
    )
    on_failure: Literal["fail_closed", "fail_open_with_alarm"] = field(
        default="fail_closed",
        metadata=doc("when the sink fails: refuse new calls (UNAVAILABLE), or go on and alarm"),
    )
    max_pending: int = field(
        default=100_000, metadata=doc("records held in memory while the sink lags", check_positive)
    )
    project: str = field(
        default="opsgate",
        metadata=doc(
            "project for logName when the resource name has none (required with sink: "
            "cloud_logging)",
            check_not_empty,
        ),
    )


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    """One token-bucket limit applied to each principal (and method) separately."""

    name: str = field(
        metadata=doc("names the limit in errors, records and metrics", check_not_empty)
    )
    rate_per_s: float = field(metadata=doc("sustained calls per second", check_positive))
    burst: float = field(metadata=doc("calls allowed at once (bucket size, at least 1)"))
    per_method: bool = field(
        default=False, metadata=doc("a bucket per principal and method, not per principal")
    )
    methods: tuple[str, ...] = field(
        default=(), metadata=doc("only these methods (GetOperation, ...); empty: all")
    )


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """The Prometheus metrics endpoint."""

    listen: str = field(
        default="0.0.0.0:9090",
        metadata=doc("HOST:PORT serving GET /metrics (Prometheus text format)", check_host_port),
    )


@dataclass(frozen=True, slots=True)
class HealthSettings:
    """A plaintext port serving only grpc.health.v1.Health, for Kubernetes' gRPC probes."""

    listen: str = field(
        default="0.0.0.0:8086",
        metadata=doc(
            "HOST:PORT serving grpc.health.v1.Health only, in plaintext even when `tls` is set "
            "(any other call is UNIMPLEMENTED); for Kubernetes' gRPC probes, which cannot "
            "speak TLS",
            check_host_port,
        ),
    )


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything `opsgate serve` needs; built once, never mutated."""

    authentication: AuthnSettings = field(metadata=doc("how callers prove who they are"))
    authorization: AuthzSettings = field(metadata=doc("which policy decides calls"))
    rate_limits: tuple[RateLimitSettings, ...] = field(
        default=(), metadata=doc("token buckets per principal; calls over them are refused")
    )
    audit: AuditSettings = field(
        default_factory=AuditSettings, metadata=doc("the audit trail: one record per call")
    )
    upstream: UpstreamSettings | None = field(
        default=None,
        metadata=doc(
            "the upstream Operations server (required by `serve` unless it is only Envoy's "
            "authorizer; unused in library mode)"
        ),
    )
    listen: str = field(
        default="127.0.0.1:8080",
        metadata=doc("HOST:PORT the gateway listens on", check_host_port),
    )
    tls: ServerTls | None = field(
        default=None, metadata=doc("TLS on the gateway's listener; omit for plaintext")
    )
    shutdown_grace_s: float = field(
        default=10.0,
        metadata=doc("seconds in-flight calls get to finish on SIGTERM/SIGINT", check_not_negative),
    )
    max_message_bytes: int = field(
        default=4 * MiB,
        metadata=doc("largest request or response message relayed", check_positive),
    )
    max_metadata_bytes: int = field(
        default=64 * KiB,
        metadata=doc("largest request metadata (headers) the listener accepts", check_positive),
    )
    log_level: Literal["debug", "info", "warning", "error"] = field(
        default="info", metadata=doc("operational log level")
    )
    log_format: Literal["json", "text"] = field(
        default="json", metadata=doc("operational logs on stderr as JSON lines, or as text")
    )
    log_refusal_summary_interval_s: float = field(
        default=60.0,
        metadata=doc(
            "seconds between the log's lines saying how many calls were refused and why "
            "(the first at once); 0: none",
            check_not_negative,
        ),
    )
    metrics: MetricsSettings | None = field(
        default=None, metadata=doc("serve Prometheus metrics; omit to turn the endpoint off")
    )
    health: HealthSettings | None = field(
        default=None,
        metadata=doc(
            "a health port of its own (the health service also answers on `listen`); omit: off"
        ),
    )
    rest: RestSettings | None = field(
        default=None,
        metadata=doc("the REST/JSON door (Google's REST paths for the methods); omit: off"),
    )
    envoy: EnvoySettings | None = field(
        default=None,
        metadata=doc(
            "serve Envoy's external authorization and access-log services on `listen`; "
            "without `upstream`, the gateway is Envoy's authorizer only. Omit: off"
        ),
    )

    @property
    def forwarding(self) -> UpstreamSettings:
        """The upstream, for `serve` (load_settings has ensured it is there)."""
        if self.upstream is None:
            raise ConfigError("<config>", "upstream", "is required to forward calls")
        return self.upstream


def load_settings(
    path: Path | None,
    *,
    listen: str | None = None,
    upstream: str | None = None,
    require_upstream: bool = True,
) -> Settings:
    """Build Settings from an optional config file, then apply flag overrides.

    Library mode loads with require_upstream=False: the chain runs inside the team's server.
    """
    source = str(path) if path is not None else "<flags>"
    data: Any = load_file(path) if path is not None else LineMap(1)
    if data is None:
        data = LineMap(1)
    if not isinstance(data, LineMap):
        raise ConfigError(source, None, "the top level must be a mapping of keys to values")
    if upstream is not None:
        existing = data.get("upstream")
        merged = LineMap(data.line_of("upstream"))
        if isinstance(existing, LineMap):
            merged.update(existing)
            merged.key_lines.update(existing.key_lines)
        merged["target"] = upstream
        data["upstream"] = merged
    if listen is not None:
        data["listen"] = listen
    base = path.parent if path is not None else Path.cwd()
    settings: Settings = Binder(source, base).bind(Settings, data, "")
    _check_audit_project(settings, data, source)
    if require_upstream and settings.upstream is None and settings.envoy is None:
        raise ConfigError(
            source,
            "upstream",
            "is required (unless `envoy` makes the gateway only Envoy's authorizer)",
            data.line,
        )
    check_consistency(settings, source)
    return settings


def check_consistency(settings: Settings, source: str) -> None:
    _check_client_certificates(settings, source)
    _check_rate_limits(settings.rate_limits, source)
    if settings.audit.sink == "file" and settings.audit.file is None:
        raise ConfigError(source, "audit.file", "is required with audit.sink: file")
    cloud_logging = settings.audit.cloud_logging
    if cloud_logging.insecure and cloud_logging.endpoint is None:
        raise ConfigError(
            source, "audit.cloud_logging.insecure", "needs audit.cloud_logging.endpoint"
        )
    _check_authentication(settings.authentication, source)
    tls = settings.upstream.tls if settings.upstream is not None else None
    if tls is not None and (tls.cert_file is None) != (tls.key_file is None):
        raise ConfigError(source, "upstream.tls", "cert_file and key_file must be given together")
    server_tls = settings.tls
    if server_tls is not None and server_tls.require_client_cert and not server_tls.client_ca_file:
        raise ConfigError(source, "tls.require_client_cert", "needs tls.client_ca_file")


def _check_audit_project(settings: Settings, data: LineMap, source: str) -> None:
    """Cloud Logging stores a record in its logName's project: the one its call names, or
    audit.project, whose default ("opsgate") names no real project."""
    audit = data.get("audit")
    if settings.audit.sink == "cloud_logging" and not (
        isinstance(audit, dict) and "project" in audit
    ):
        raise ConfigError(
            source,
            "audit.project",
            "is required with audit.sink: cloud_logging (the project whose audit logs hold "
            "the records of calls that name no project)",
            data.line_of("audit"),
        )


def documented_keys() -> list[tuple[str, str, str]]:
    """(key path, default, description) for every config key, as the README documents them."""
    return schema_keys(Settings)


def _check_authentication(authn: AuthnSettings, source: str) -> None:
    certificates_alone = (
        authn.client_certificates is not None and not authn.client_certificates.require_token
    )
    kinds = (authn.issuers, authn.google_id_tokens, authn.service_account_jwts)
    if not any(kinds) and authn.google_access_tokens is None and not certificates_alone:
        raise ConfigError(
            source,
            "authentication",
            "configures no way to authenticate: add issuers, google_id_tokens, "
            "service_account_jwts or google_access_tokens",
        )
    for index, issuer in enumerate(authn.issuers):
        key = f"authentication.issuers[{index}]"
        sources = [issuer.jwks_uri, issuer.jwks_file, issuer.discovery or None]
        given = sum(value is not None for value in sources)
        if given > 1:
            raise ConfigError(source, key, "give only one of jwks_uri, jwks_file and discovery")
        if given == 0 and issuer.introspection is None:
            raise ConfigError(
                source, key, "needs jwks_uri, jwks_file, discovery: true, or introspection"
            )
        if issuer.introspection is not None:
            introspection = issuer.introspection
            secret_sources = [introspection.client_secret_file, introspection.client_secret_env]
            if sum(value is not None for value in secret_sources) != 1:
                raise ConfigError(
                    source,
                    f"{key}.introspection",
                    "give exactly one of client_secret_file and client_secret_env",
                )
            client_secret(introspection, source)


def _check_rate_limits(limits: tuple[RateLimitSettings, ...], source: str) -> None:
    known = {path.rsplit("/", 1)[-1] for path in METHODS_BY_PATH}
    names: set[str] = set()
    for index, limit in enumerate(limits):
        key = f"rate_limits[{index}]"
        if limit.name in names:
            raise ConfigError(source, f"{key}.name", f"'{limit.name}' is used twice")
        names.add(limit.name)
        if limit.burst < 1:
            raise ConfigError(source, f"{key}.burst", f"must be at least 1, got {limit.burst}")
        unknown = sorted(set(limit.methods) - known)
        if unknown:
            raise ConfigError(
                source, f"{key}.methods", f"unknown method(s) {unknown}; known: {sorted(known)}"
            )


def _check_client_certificates(settings: Settings, source: str) -> None:
    config = settings.authentication.client_certificates
    if config is None:
        return
    key = "authentication.client_certificates"
    verified_here = settings.tls is not None and settings.tls.require_client_cert
    # Behind Envoy the certificate is the one Envoy's listener verified (`opsgate envoy-config`
    # will not write a bootstrap with client_certificates and no client CA); opsgate's own
    # door, if any, sees none without TLS of its own, so it never maps an unverified one.
    if not verified_here and settings.envoy is None:
        raise ConfigError(
            source,
            key,
            "needs tls.require_client_cert: true (verified certificates), or `envoy` (Envoy "
            "verifies them)",
        )
    for index, identity in enumerate(config.identities):
        where = f"{key}.identities[{index}]"
        if (identity.san_uri is None) == (identity.san_email is None):
            raise ConfigError(source, where, "give exactly one of san_uri and san_email")
