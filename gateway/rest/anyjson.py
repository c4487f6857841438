"""Answers as proto3 JSON with the door's types; an Any no type resolves is kept, losslessly."""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from urllib.parse import quote

from google.protobuf import any_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2

from gateway.errors import GATEWAY_DOMAIN
from gateway.resource_names import printable

log = logging.getLogger("opsgate.rest")

UNRESOLVED_HEADER = "X-Opsgate-Unresolved-Types"
UNRESOLVED_REASON = "ANY_TYPE_UNRESOLVED"
_ANY = any_pb2.Any.DESCRIPTOR.full_name
_LOGGED_TYPES = 1000  # distinct type URLs logged: an upstream could send endless new ones
_HEADER_CHARS = 4096  # the header lists the URLs that fit; the body has every one
_URL_SAFE = "/:@!$&'()*+;=~"  # RFC 3986 reserved and unreserved characters, less the comma


@dataclass(frozen=True, slots=True)
class Rendered:
    """An answer's JSON text and the type URLs it holds unresolved, in the order first met."""

    text: str
    unresolved: tuple[str, ...] = ()

    def headers(self) -> dict[str, str]:
        """`X-Opsgate-Unresolved-Types: URL,URL` when some Any could not be rendered."""
        shown: list[str] = []
        size = 0
        for url in self.unresolved:
            item = quote(url, safe=_URL_SAFE)
            size += len(item) + 1
            if size > _HEADER_CHARS:
                break
            shown.append(item)
        return {UNRESOLVED_HEADER: ",".join(shown)} if self.unresolved else {}


class AnyRenderer:
    """Renders messages with `pool` (None: the default pool); one per door, as it remembers
    which type URLs it has already warned about.

    An Any whose type no descriptor resolves (or whose bytes do not parse as it) has no proto3
    JSON form, and keeping its own type URL would make every proto3 JSON reader refuse the whole
    answer. It is answered in its place as a google.rpc.ErrorInfo (reason ANY_TYPE_UNRESOLVED,
    domain opsgate) whose metadata holds the type URL as sent and the standard base64 of its
    bytes: a type every google-api-core process has, so the rest reads as usual.
    """

    def __init__(self, pool: descriptor_pool.DescriptorPool | None = None) -> None:
        self._pool = pool
        self._lookup = pool if pool is not None else descriptor_pool.Default()
        self._logged: set[str] = set()

    def render(self, message: Message) -> Rendered:
        try:
            return Rendered(json_format.MessageToJson(message, descriptor_pool=self._pool))
        except (TypeError, DecodeError):
            pass  # an Any that cannot be rendered, somewhere: find each one (the rare path)
        copy = type(message)()
        copy.CopyFrom(message)
        unresolved: dict[str, None] = {}
        self._settle(copy, unresolved)
        text = json_format.MessageToJson(copy, descriptor_pool=self._pool)
        return Rendered(text, tuple(unresolved))

    def _settle(self, message: Message, unresolved: dict[str, None]) -> bool:
        """Replace every Any in `message` (itself included) that cannot be rendered, at any
        depth (fields, repeated fields, map values, inside resolved Anys); True if one was."""
        if message.DESCRIPTOR.full_name == _ANY:
            return self._settle_any(message, unresolved)
        changed = False
        for spec, value in message.ListFields():
            if spec.type != FieldDescriptor.TYPE_MESSAGE:
                continue
            if spec.message_type.GetOptions().map_entry:
                if spec.message_type.fields_by_name["value"].type != FieldDescriptor.TYPE_MESSAGE:
                    continue
                items = list(value.values())
            elif is_repeated(spec):
                items = list(value)
            else:
                items = [value]
            for item in items:
                changed = self._settle(item, unresolved) or changed
        return changed

    def _settle_any(self, packed: any_pb2.Any, unresolved: dict[str, None]) -> bool:
        if not packed.type_url and not packed.value:
            return False  # the empty Any: `{}`
        inner = self._unpacked(packed)
        if inner is None:
            unresolved[packed.type_url] = None
            packed.Pack(unresolved_info(packed))
            return True
        if self._settle(inner, unresolved):
            packed.value = inner.SerializeToString()
            return True
        return False

    def _unpacked(self, packed: any_pb2.Any) -> Message | None:
        url = packed.type_url
        try:
            spec = self._lookup.FindMessageTypeByName(url.rpartition("/")[2])
        except (KeyError, TypeError):  # TypeError: the pool could not build the file it is in
            self._warn(url, "no descriptor has this type")
            return None
        inner: Message = message_factory.GetMessageClass(spec)()
        try:
            inner.ParseFromString(packed.value)
        except DecodeError:
            self._warn(url, "its bytes do not parse as this type")
            return None
        return inner

    def _warn(self, url: str, problem: str) -> None:
        if url in self._logged or len(self._logged) > _LOGGED_TYPES:
            return
        self._logged.add(url)
        if len(self._logged) > _LOGGED_TYPES:
            log.warning("more than %d unresolved Any types: no more are logged", _LOGGED_TYPES)
            return
        log.warning(
            "REST answers cannot render Any fields of type '%s' (%s): each is answered as an "
            "ErrorInfo %s holding the type URL and bytes. To render it, add a descriptor set "
            "with the type to rest.descriptor_sets or the Python module defining it to "
            "rest.type_modules",
            printable(url),
            problem,
            UNRESOLVED_REASON,
        )


def unresolved_info(packed: any_pb2.Any) -> error_details_pb2.ErrorInfo:
    """What stands in for an Any that cannot be rendered: its type URL and bytes, as sent."""
    return error_details_pb2.ErrorInfo(
        reason=UNRESOLVED_REASON,
        domain=GATEWAY_DOMAIN,
        metadata={"typeUrl": packed.type_url, "value": base64.b64encode(packed.value).decode()},
    )


def is_repeated(spec: FieldDescriptor) -> bool:
    flag = getattr(spec, "is_repeated", None)  # protobuf >= 5.29; `label` before (gone in 7)
    if flag is None:
        return bool(spec.label == FieldDescriptor.LABEL_REPEATED)
    return bool(flag)
