"""RestSettings: where the REST/JSON door listens and how much of a request it will read."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gateway.configschema import KiB, check_host_port, check_positive, doc
from gateway.rest.anytypes import TypeSourceError, import_type_modules, type_pool


def check_type_modules(names: tuple[str, ...]) -> str | None:
    try:
        import_type_modules(names)
    except TypeSourceError as exc:
        return str(exc)
    return None


def check_descriptor_sets(paths: tuple[Path, ...]) -> str | None:
    try:
        type_pool(paths)
    except TypeSourceError as exc:
        return str(exc)
    return None


@dataclass(frozen=True, slots=True)
class RestSettings:
    """The REST/JSON door: Google's REST paths for the Operations methods, on an HTTP port."""

    listen: str = field(
        metadata=doc(
            "HOST:PORT of the REST/JSON listener (HTTPS with `tls`), e.g. 127.0.0.1:8081",
            check_host_port,
        )
    )
    max_body_bytes: int = field(
        default=64 * KiB,
        metadata=doc("largest request body read (a cancel's body is `{}`)", check_positive),
    )
    max_header_bytes: int = field(
        default=64 * KiB,
        metadata=doc("largest single request header line (bearer tokens included)", check_positive),
    )
    # Before descriptor_sets: a set may lean on files these modules register.
    type_modules: tuple[str, ...] = field(
        default=(),
        metadata=doc(
            "Python modules imported so that the message types they define render in Any "
            "fields (operation metadata, responses, error details), e.g. "
            "google.cloud.contact_center_insights_v1",
            check_type_modules,
        ),
    )
    descriptor_sets: tuple[Path, ...] = field(
        default=(),
        metadata=doc(
            "FileDescriptorSet files (protoc --include_imports --descriptor_set_out) whose "
            "message types render in Any fields",
            check_descriptor_sets,
        ),
    )
