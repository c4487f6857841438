"""FileDescriptorSets as protoc --include_imports writes them, made from descriptors in this process."""

from __future__ import annotations

from collections.abc import Iterator

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, FileDescriptor


def descriptor_set(*messages: Descriptor) -> bytes:
    """The files defining `messages` and every file they import, each after its imports."""
    files = descriptor_pb2.FileDescriptorSet()
    for file in _in_import_order([message.file for message in messages]):
        file.CopyToProto(files.file.add())
    serialized: bytes = files.SerializeToString()
    return serialized


def _in_import_order(roots: list[FileDescriptor]) -> Iterator[FileDescriptor]:
    seen: set[str] = set()

    def visit(file: FileDescriptor) -> Iterator[FileDescriptor]:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            yield from visit(dependency)
        yield file

    for root in roots:
        yield from visit(root)
