"""Finds the bearer token in a call's metadata: exactly one `authorization: Bearer <token>`."""

from __future__ import annotations

import re
from collections.abc import Iterable

from gateway.errors import credentials_missing, token_invalid

# RFC 6750 section 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def presented_token(
    metadata: Iterable[tuple[str, str | bytes]] | None, max_token_bytes: int
) -> str:
    """What the caller presents as its bearer token, within the size limit, or the
    UNAUTHENTICATED error Google's APIs answer with. Not yet checked for the characters a token
    may have (checked_token): a token already verified was checked then."""
    values = [value for key, value in metadata or () if key == "authorization"]
    if not values:
        raise credentials_missing("no authorization header")
    if len(values) > 1:
        raise token_invalid("more than one authorization header")
    header = values[0]
    if isinstance(header, bytes):
        raise token_invalid("authorization header is binary")
    scheme, _, rest = header.strip().partition(" ")
    if not scheme:
        raise credentials_missing("empty authorization header")
    if scheme.lower() != "bearer":
        raise credentials_missing("authorization scheme is not Bearer")
    token = rest.strip()
    if not token:
        raise credentials_missing("Bearer without a token")
    if len(token) > max_token_bytes:
        raise token_invalid(f"token longer than {max_token_bytes} bytes")
    return token


def checked_token(token: str, max_token_bytes: int) -> str:
    """`token` if it can be a bearer token (RFC 6750), or the UNAUTHENTICATED error."""
    if len(token) > max_token_bytes:
        raise token_invalid(f"token longer than {max_token_bytes} bytes")
    if " " in token or "," in token:
        raise token_invalid("more than one token in the authorization header")
    if not _B64TOKEN.fullmatch(token):
        raise token_invalid("token has characters a bearer token cannot have")
    return token


def has_authorization(metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
    """Whether the caller sent any authorization header at all (anonymous calls send none)."""
    return any(key == "authorization" for key, _ in metadata or ())
