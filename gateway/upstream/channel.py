"""Builds the grpc.aio channel to the upstream: plaintext, TLS or mTLS, with keepalive."""

from __future__ import annotations

from pathlib import Path

import grpc

from gateway.config import UpstreamSettings
from gateway.sourcefile import read_bytes


def _read(path: Path | None, key: str) -> bytes | None:
    return None if path is None else read_bytes(path, key)


def channel_options(settings: UpstreamSettings, max_message_bytes: int) -> list[tuple[str, object]]:
    options: list[tuple[str, object]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 0),
        # The gateway relays the client's own metadata, never adds a second user agent of its own.
        ("grpc.primary_user_agent", "opsgate"),
    ]
    if settings.tls is not None and settings.tls.server_name:
        options.append(("grpc.ssl_target_name_override", settings.tls.server_name))
    return options


def open_channel(settings: UpstreamSettings, max_message_bytes: int) -> grpc.aio.Channel:
    """A channel to the upstream; it connects lazily, so start-up never waits on the upstream."""
    options = channel_options(settings, max_message_bytes)
    tls = settings.tls
    if tls is None:
        return grpc.aio.insecure_channel(settings.target, options=options)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca_file, "upstream.tls.ca_file"),
        private_key=_read(tls.key_file, "upstream.tls.key_file"),
        certificate_chain=_read(tls.cert_file, "upstream.tls.cert_file"),
    )
    return grpc.aio.secure_channel(settings.target, credentials, options=options)
