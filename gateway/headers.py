"""The headers the gateway sets itself, and the one test every door uses to drop a caller's copy."""

from __future__ import annotations

from collections.abc import Iterable

Metadata = tuple[tuple[str, str | bytes], ...]

DEFAULT_IDENTITY_HEADER = "x-opsgate-principal"  # authentication.identity_header's default
REQUEST_ID_KEY = "x-request-id"  # the one trailing key the gateway adds to every answer
TIMEOUT_HEADER = "x-server-timeout"  # the REST door's deadline, sent upstream as grpc-timeout
CREDENTIAL_HEADER = "authorization"

# What the gateway asserts: no caller may send any spelling of these, on any door. Its own
# namespace (the default identity header, x-opsgate-policy-etag on health answers, ...) stays
# reserved when another identity header is configured: nothing else may ever claim it.
_OWN_HEADERS = frozenset({DEFAULT_IDENTITY_HEADER, REQUEST_ID_KEY, TIMEOUT_HEADER})
_OWN_PREFIX = "x-opsgate-"

# What the transport writes afresh on every call the gateway makes (plus HTTP/1's `host`, which
# some servers prefer to :authority), and the caller's credential. The exact key is the
# caller's own (the audit stage reads its user-agent, authn its authorization); any other
# spelling is a second copy that a lenient server could read in place of the real one.
TRANSPORT_HEADERS = frozenset({"user-agent", "te", "content-type", "host"})
_EXACT_ONLY = TRANSPORT_HEADERS | {CREDENTIAL_HEADER}
_GRPC_PREFIX = "grpc-"  # gRPC's reserved namespace: grpc-timeout, grpc-encoding, ...

_BIN_SUFFIX = "-bin"
_MEMO_SIZE = 1024  # distinct keys remembered; callers choose keys, so the memo is bounded


def header_family(key: str) -> str:
    """The header a lenient server or proxy may read `key` as: lower case, `_` as `-`, and
    without `-bin` (a binary header of the same name), however often it is repeated."""
    family = key.lower().replace("_", "-")
    while family.endswith(_BIN_SUFFIX):
        family = family[: -len(_BIN_SUFFIX)]
    return family


class GatewayHeaders:
    """The headers one configured gateway sets; `smuggled` says which caller keys spell them.

    Every door (the gRPC proxy's forwarder, library mode, the REST door) drops smuggled keys
    from what a caller sent, so an upstream or a servicer only ever sees the gateway's copy.
    """

    __slots__ = ("_memo", "_own")

    def __init__(self, identity_header: str | None = None) -> None:
        own = set(_OWN_HEADERS)
        if identity_header:
            own.add(header_family(identity_header))
        self._own = frozenset(own)
        self._memo: dict[str, bool] = {}

    def smuggled(self, key: str) -> bool:
        """Any spelling of a header the gateway asserts; any spelling but the exact one of a
        transport header, of gRPC's reserved names, or of the credential header."""
        verdict = self._memo.get(key)
        if verdict is None:
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            verdict = self._memo[key] = self._judge(key)
        return verdict

    def _judge(self, key: str) -> bool:
        family = header_family(key)
        if family in self._own or family.startswith(_OWN_PREFIX):
            return True
        if family == key:
            return False
        return family in _EXACT_ONLY or family.startswith(_GRPC_PREFIX)

    def without_smuggled(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Metadata:
        """`metadata` minus smuggled keys; the very same tuple when there are none."""
        given = metadata if isinstance(metadata, tuple) else tuple(metadata or ())
        smuggled = self.smuggled
        if not any(smuggled(key) for key, _ in given):
            return given
        return tuple((key, value) for key, value in given if not smuggled(key))


def is_transport_header(key: str) -> bool:
    """The caller's own transport headers (exact keys): never relayed, grpc sets them afresh."""
    return key in TRANSPORT_HEADERS or key.startswith((_GRPC_PREFIX, ":"))
