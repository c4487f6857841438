"""RestSettings: where the REST/JSON door listens and how much of a request it will read."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.configschema import KiB, check_host_port, check_positive, doc


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
