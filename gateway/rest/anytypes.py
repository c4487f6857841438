"""The types the REST door renders Any fields with: operator descriptor sets, then imported ones."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.descriptor_pb2 import FileDescriptorProto
from google.protobuf.message import DecodeError

from gateway.errors import OpsgateError

log = logging.getLogger("opsgate.rest")

# The client library whose import registers a built-in service's own types (its operations'
# metadata and responses), tried when installed: pip install 'opsgate[contactcenterinsights]'.
SERVICE_TYPE_MODULES: dict[str, tuple[str, ...]] = {
    "contactcenterinsights.googleapis.com": ("google.cloud.contact_center_insights_v1",),
}


class TypeSourceError(OpsgateError, ValueError):
    """A descriptor set or type module cannot be used; config turns it into a ConfigError."""

    reason = "CONFIG_INVALID"


def import_type_modules(names: Iterable[str]) -> None:
    """Import each module so the message types it defines register in the default pool."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise TypeSourceError(f"cannot import module '{name}': {exc}") from exc
        except Exception as exc:  # a module's own import-time failure, e.g. a duplicate proto
            raise TypeSourceError(f"importing module '{name}' failed: {exc}") from exc


def import_service_types(service: str) -> tuple[str, ...]:
    """Quietly import the client library of `service`'s own types, where it is installed;
    the modules imported."""
    imported = []
    for name in SERVICE_TYPE_MODULES.get(service, ()):
        try:
            importlib.import_module(name)
        except ImportError:
            log.debug("%s is not installed: %s types render from rest settings only", name, service)
            continue
        except Exception as exc:  # installed but broken: the door still serves, without it
            log.warning("importing %s failed, its types will not render: %s", name, exc)
            continue
        imported.append(name)
    return tuple(imported)


def type_pool(paths: Sequence[Path]) -> descriptor_pool.DescriptorPool | None:
    """The pool Any fields are rendered with: the sets' files first, then every file of the
    default pool; None (the default pool itself) without sets. Every file of the sets is built
    here, so a set that cannot be is refused now, not at call time."""
    if not paths:
        return None
    files = _read_sets(paths)
    pool = descriptor_pool.DescriptorPool(descriptor_db=_SetsThenDefault(files))
    for name, (path, _) in files.items():
        try:
            pool.FindFileByName(name)
        except (KeyError, TypeError) as exc:
            raise TypeSourceError(
                f"{path}: {name} cannot be used: {exc} (write the set with "
                "protoc --include_imports --descriptor_set_out)"
            ) from exc
    _note_differences(files)
    return pool


def _read_sets(paths: Sequence[Path]) -> dict[str, tuple[Path, FileDescriptorProto]]:
    """Every file of every set by name, with the set it came from; a name two sets give
    differently is refused (one pool cannot hold both)."""
    files: dict[str, tuple[Path, FileDescriptorProto]] = {}
    for path in paths:
        for proto in _read_set(path):
            seen = files.get(proto.name)
            if seen is None:
                files[proto.name] = (path, proto)
            elif _normalized(seen[1]) != _normalized(proto):
                raise TypeSourceError(
                    f"{path}: {proto.name} differs from the one in {seen[0]}; build both sets "
                    "from the same protos, or leave one out"
                )
    return files


def _read_set(path: Path) -> Sequence[FileDescriptorProto]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TypeSourceError(f"{path} cannot be read: {exc.strerror or exc}") from exc
    try:
        found = descriptor_pb2.FileDescriptorSet.FromString(data)
    except DecodeError as exc:
        raise TypeSourceError(
            f"{path} is not a FileDescriptorSet (protoc --descriptor_set_out): {exc}"
        ) from exc
    if not found.file or not all(proto.name for proto in found.file):
        raise TypeSourceError(f"{path} is not a FileDescriptorSet: it holds no named files")
    files: Sequence[FileDescriptorProto] = found.file
    return files


def _normalized(proto: FileDescriptorProto) -> bytes:
    """The file's content without what protoc and the runtime write differently (json_name,
    source info), to tell a copy of a file from another version of it."""
    copy = FileDescriptorProto()
    copy.CopyFrom(proto)
    copy.ClearField("source_code_info")
    for message in _messages(copy.message_type):
        for spec in message.field:
            spec.ClearField("json_name")
    for extension in copy.extension:
        extension.ClearField("json_name")
    content: bytes = copy.SerializeToString(deterministic=True)
    return content


def _messages(
    messages: Iterable[descriptor_pb2.DescriptorProto],
) -> Iterator[descriptor_pb2.DescriptorProto]:
    for message in messages:
        yield message
        yield from _messages(message.nested_type)


def _note_differences(files: dict[str, tuple[Path, FileDescriptorProto]]) -> None:
    """Log the files a set gives in another version than this process has. The set's version
    renders (it is what the set's own files were compiled with); the gateway's own types are
    untouched, as the sets' files live in the REST door's pool only."""
    default = descriptor_pool.Default()
    differing = []
    for name, (_, proto) in files.items():
        try:
            mine = default.FindFileByName(name)
        except KeyError:
            continue
        own = FileDescriptorProto()
        mine.CopyToProto(own)
        if _normalized(own) != _normalized(proto):
            differing.append(name)
    if differing:
        log.info(
            "the descriptor sets' version of %s differs from this process's; the sets' renders "
            "Any fields",
            ", ".join(sorted(differing)),
        )


class _SetsThenDefault:
    """A descriptor database (the methods DescriptorPool asks): the sets' files first, then
    the default pool's, so a type registered by an imported module resolves too."""

    def __init__(self, files: dict[str, tuple[Path, FileDescriptorProto]]) -> None:
        self._files = {name: proto for name, (_, proto) in files.items()}
        self._symbols: dict[str, FileDescriptorProto] = {}
        for proto in self._files.values():
            for symbol in _symbols(proto):
                self._symbols.setdefault(symbol, proto)
        self._default = descriptor_pool.Default()

    def FindFileByName(self, name: str) -> FileDescriptorProto:  # the database protocol
        found = self._files.get(name)
        return found if found is not None else _copy(self._default.FindFileByName(name))

    def FindFileContainingSymbol(self, symbol: str) -> FileDescriptorProto:
        found = self._symbols.get(symbol)
        if found is not None:
            return found
        return _copy(self._default.FindFileContainingSymbol(symbol))


def _copy(file: FileDescriptor) -> FileDescriptorProto:
    proto = FileDescriptorProto()
    file.CopyToProto(proto)
    return proto


def _symbols(proto: FileDescriptorProto) -> Iterator[str]:
    """The full names a file defines: messages (nested too), enums, services, extensions."""
    prefix = f"{proto.package}." if proto.package else ""

    def messages(scope: str, found: Iterable[descriptor_pb2.DescriptorProto]) -> Iterator[str]:
        for message in found:
            name = f"{scope}{message.name}"
            yield name
            yield from messages(f"{name}.", message.nested_type)
            yield from (f"{name}.{enum.name}" for enum in message.enum_type)
            yield from (f"{name}.{ext.name}" for ext in message.extension)

    yield from messages(prefix, proto.message_type)
    yield from (f"{prefix}{enum.name}" for enum in proto.enum_type)
    yield from (f"{prefix}{service.name}" for service in proto.service)
    yield from (f"{prefix}{ext.name}" for ext in proto.extension)
