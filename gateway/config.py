"""Settings: the frozen configuration read once at start-up from a YAML file and flags."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gateway.errors import ConfigError
from gateway.sourcefile import LineMap, load_file

MiB = 1024 * 1024
KiB = 1024


def _check_host_port(value: str) -> str | None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        return f"'{value}' is not HOST:PORT (for example 127.0.0.1:8080 or [::]:8443)"
    return None


def _check_positive(value: float) -> str | None:
    return None if value > 0 else f"must be greater than 0, got {value}"


def _check_not_negative(value: float) -> str | None:
    return None if value >= 0 else f"must be 0 or more, got {value}"


def _check_not_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _doc(text: str, check: typing.Callable[[Any], str | None] | None = None) -> Any:
    return {"doc": text, "check": check}


@dataclass(frozen=True, slots=True)
class ServerTls:
    """TLS on the gateway's own listener."""

    cert_file: Path = field(metadata=_doc("PEM certificate chain the gateway presents"))
    key_file: Path = field(metadata=_doc("PEM private key for cert_file"))
    client_ca_file: Path | None = field(
        default=None, metadata=_doc("PEM CA bundle for verifying client certificates (mTLS)")
    )
    require_client_cert: bool = field(
        default=False, metadata=_doc("refuse connections without a valid client certificate")
    )


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """TLS (and optionally mTLS) from the gateway to the upstream."""

    ca_file: Path | None = field(
        default=None, metadata=_doc("PEM CA bundle to verify the upstream; system roots if unset")
    )
    cert_file: Path | None = field(
        default=None, metadata=_doc("PEM client certificate chain for mTLS to the upstream")
    )
    key_file: Path | None = field(default=None, metadata=_doc("PEM private key for cert_file"))
    server_name: str | None = field(
        default=None, metadata=_doc("name to verify in the upstream certificate, if not the host")
    )


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """Where allowed calls are forwarded."""

    target: str = field(
        metadata=_doc(
            "gRPC target of the Operations server, e.g. ops.internal:443", _check_not_empty
        )
    )
    tls: UpstreamTls | None = field(
        default=None, metadata=_doc("set to use TLS to the upstream; omit for plaintext")
    )
    keepalive_time_s: float = field(
        default=30.0, metadata=_doc("seconds between HTTP/2 keepalive pings", _check_positive)
    )


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything `opsgate serve` needs; built once, never mutated."""

    upstream: UpstreamSettings = field(metadata=_doc("the upstream Operations server"))
    listen: str = field(
        default="127.0.0.1:8080",
        metadata=_doc("HOST:PORT the gateway listens on", _check_host_port),
    )
    tls: ServerTls | None = field(
        default=None, metadata=_doc("TLS on the gateway's listener; omit for plaintext")
    )
    shutdown_grace_s: float = field(
        default=10.0,
        metadata=_doc(
            "seconds in-flight calls get to finish on SIGTERM/SIGINT", _check_not_negative
        ),
    )
    max_message_bytes: int = field(
        default=4 * MiB,
        metadata=_doc("largest request or response message relayed", _check_positive),
    )
    max_metadata_bytes: int = field(
        default=64 * KiB,
        metadata=_doc("largest request metadata (headers) the listener accepts", _check_positive),
    )
    log_level: Literal["debug", "info", "warning", "error"] = field(
        default="info", metadata=_doc("operational log level")
    )


def load_settings(
    path: Path | None, *, listen: str | None = None, upstream: str | None = None
) -> Settings:
    """Build Settings from an optional config file, then apply flag overrides."""
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
    settings: Settings = _Binder(source, base).bind(Settings, data, "")
    _check_consistency(settings, source)
    return settings


def _check_consistency(settings: Settings, source: str) -> None:
    tls = settings.upstream.tls
    if tls is not None and (tls.cert_file is None) != (tls.key_file is None):
        raise ConfigError(source, "upstream.tls", "cert_file and key_file must be given together")
    server_tls = settings.tls
    if server_tls is not None and server_tls.require_client_cert and not server_tls.client_ca_file:
        raise ConfigError(source, "tls.require_client_cert", "needs tls.client_ca_file")


class _Binder:
    """Turns parsed YAML into the Settings dataclasses, naming the key and line of any problem."""

    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir

    def bind(self, cls: type[Any], data: Any, prefix: str) -> Any:
        line = data.line if isinstance(data, LineMap) else None
        if not isinstance(data, dict):
            raise self._error(prefix or None, "must be a mapping of keys to values", line)
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in data:
            if key not in fields:
                hint = difflib.get_close_matches(key, fields, n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise self._error(_join(prefix, key), f"unknown key{suggestion}", _line(data, key))
        values: dict[str, Any] = {}
        for name, spec in fields.items():
            key_path = _join(prefix, name)
            if name not in data:
                if spec.default is dataclasses.MISSING:
                    raise self._error(key_path, "is required", line)
                continue
            value = self.convert(hints[name], data[name], key_path, _line(data, name))
            check = spec.metadata.get("check")
            problem = check(value) if check is not None and value is not None else None
            if problem:
                raise self._error(key_path, problem, _line(data, name))
            values[name] = value
        return cls(**values)

    def convert(self, kind: Any, value: Any, key: str, line: int | None) -> Any:
        origin = typing.get_origin(kind)
        if origin in (types.UnionType, typing.Union):
            options = [arg for arg in typing.get_args(kind) if arg is not type(None)]
            return None if value is None else self.convert(options[0], value, key, line)
        if origin is Literal:
            choices = typing.get_args(kind)
            if value not in choices:
                allowed = ", ".join(repr(c) for c in choices)
                raise self._error(key, f"must be one of {allowed}, got {value!r}", line)
            return value
        if dataclasses.is_dataclass(kind):
            return self.bind(kind, value, key)  # type: ignore[arg-type]
        if kind is bool:
            if not isinstance(value, bool):
                raise self._error(key, f"must be true or false, got {value!r}", line)
            return value
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self._error(key, f"must be a whole number, got {value!r}", line)
            return value
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self._error(key, f"must be a number, got {value!r}", line)
            return float(value)
        if kind is str:
            if not isinstance(value, str):
                raise self._error(key, f"must be a string, got {value!r}", line)
            return value
        if kind is Path:
            if not isinstance(value, str) or not value:
                raise self._error(key, f"must be a file path, got {value!r}", line)
            path = (self.base_dir / value).resolve()
            if not path.is_file():
                raise self._error(key, f"file '{path}' does not exist", line)
            return path
        raise TypeError(f"config field {key} has unsupported type {kind!r}")  # a bug, not input

    def _error(self, key: str | None, problem: str, line: int | None) -> ConfigError:
        return ConfigError(self.source, key, problem, line)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _line(data: dict[str, Any], key: str) -> int | None:
    return data.line_of(key) if isinstance(data, LineMap) else None


def documented_keys(cls: type[Any] = Settings, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key path, default, description) for every config key, as the README documents them."""
    rows: list[tuple[str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for spec in dataclasses.fields(cls):
        key = _join(prefix, spec.name)
        default = "required" if spec.default is dataclasses.MISSING else repr(spec.default)
        rows.append((key, default, spec.metadata.get("doc", "")))
        nested = [a for a in typing.get_args(hints[spec.name]) if dataclasses.is_dataclass(a)]
        target = nested[0] if nested else hints[spec.name]
        if dataclasses.is_dataclass(target):
            rows.extend(documented_keys(target, key))  # type: ignore[arg-type]
    return rows
