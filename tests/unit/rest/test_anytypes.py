"""The REST door's Any types: descriptor sets and modules checked at config load, and an Any no
type resolves rendered in its place as the documented ErrorInfo, at any depth, logged once."""

from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, descriptor_pb2, json_format, message_factory, timestamp_pb2
from google.protobuf.descriptor_pb2 import FieldDescriptorProto, FileDescriptorProto
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from gateway.cli import main
from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.rest.anyjson import UNRESOLVED_HEADER, AnyRenderer, Rendered
from gateway.rest.anytypes import TypeSourceError, type_pool
from tests.support.descriptor_sets import descriptor_set

HIDDEN = "type.googleapis.com/acme.hidden.v1.Secret"
OPTIONAL, REPEATED = FieldDescriptorProto.LABEL_OPTIONAL, FieldDescriptorProto.LABEL_REPEATED
MESSAGE, STRING = FieldDescriptorProto.TYPE_MESSAGE, FieldDescriptorProto.TYPE_STRING


def holder_file(name: str = "acme/v1/holder.proto") -> FileDescriptorProto:
    """acme.v1.Holder: an Any, repeated Anys and a map of Anys, in a file nobody imports."""
    proto = FileDescriptorProto(
        name=name, package="acme.v1", syntax="proto3", dependency=["google/protobuf/any.proto"]
    )
    holder = proto.message_type.add(name="Holder")
    any_type = ".google.protobuf.Any"
    holder.field.add(name="one", number=1, label=OPTIONAL, type=MESSAGE, type_name=any_type)
    holder.field.add(name="many", number=2, label=REPEATED, type=MESSAGE, type_name=any_type)
    entry = holder.nested_type.add(name="ByKeyEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, label=OPTIONAL, type=STRING)
    entry.field.add(name="value", number=2, label=OPTIONAL, type=MESSAGE, type_name=any_type)
    holder.field.add(
        name="by_key",
        number=3,
        label=REPEATED,
        type=MESSAGE,
        type_name=".acme.v1.Holder.ByKeyEntry",
    )
    return proto


def write_set(path: Path, *files: FileDescriptorProto) -> Path:
    found = descriptor_pb2.FileDescriptorSet()
    any_file = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set(any_pb2.Any.DESCRIPTOR))
    found.file.extend(any_file.file)
    found.file.extend(files)
    path.write_bytes(found.SerializeToString())
    return path


def packed(message: Message, url: str | None = None) -> any_pb2.Any:
    result = any_pb2.Any()
    result.Pack(message)
    if url is not None:
        result.type_url = url
    return result


def hidden(value: bytes = b"\x08\x2a") -> any_pb2.Any:
    return any_pb2.Any(type_url=HIDDEN, value=value)


def stand_in(url: str, value: bytes) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "ANY_TYPE_UNRESOLVED",
        "domain": "opsgate",
        "metadata": {"typeUrl": url, "value": base64.b64encode(value).decode()},
    }


# -- rendering


def test_resolvable_answers_render_as_json_format_does() -> None:
    operation = operations_pb2.Operation(name="operations/1", done=True)
    operation.metadata.Pack(timestamp_pb2.Timestamp(seconds=7))
    operation.response.Pack(error_details_pb2.ErrorInfo(reason="R"))
    rendered = AnyRenderer().render(operation)
    assert rendered == Rendered(json_format.MessageToJson(operation))
    assert rendered.headers() == {}


def test_an_unresolvable_any_at_any_depth_is_replaced_alone(tmp_path: Path) -> None:
    pool = type_pool([write_set(tmp_path / "holder.pb", holder_file())])
    assert pool is not None
    holder_class = message_factory.GetMessageClass(pool.FindMessageTypeByName("acme.v1.Holder"))
    info = error_details_pb2.ErrorInfo(reason="KNOWN")
    # Holder's Any is the pool's own class: filled by fields, not by any_pb2.Any values.
    holder = holder_class()
    for target, source in [
        (holder.one, hidden(b"1")),
        (holder.many.add(), packed(info)),
        (holder.many.add(), hidden(b"2")),
        (holder.by_key["k"], hidden(b"3")),
    ]:
        target.type_url, target.value = source.type_url, source.value
    operation = operations_pb2.Operation(name="operations/1")
    operation.metadata.Pack(holder)
    operation.response.Pack(hidden(b"4"))  # an Any of an Any
    before = operation.SerializeToString()

    rendered = AnyRenderer(pool).render(operation)

    assert operation.SerializeToString() == before  # the caller's message is not touched
    assert rendered.unresolved == (HIDDEN,)
    assert rendered.headers() == {UNRESOLVED_HEADER: HIDDEN}
    assert json.loads(rendered.text) == {
        "name": "operations/1",
        "metadata": {
            "@type": "type.googleapis.com/acme.v1.Holder",
            "one": stand_in(HIDDEN, b"1"),
            "many": [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "KNOWN"},
                stand_in(HIDDEN, b"2"),
            ],
            "byKey": {"k": stand_in(HIDDEN, b"3")},
        },
        "response": {
            "@type": "type.googleapis.com/google.protobuf.Any",
            "value": stand_in(HIDDEN, b"4"),
        },
    }
    # Without the set, Holder itself is what cannot be rendered: its bytes are kept whole.
    without = AnyRenderer().render(operation)
    assert without.unresolved == ("type.googleapis.com/acme.v1.Holder", HIDDEN)
    assert json.loads(without.text)["metadata"] == stand_in(
        "type.googleapis.com/acme.v1.Holder", operation.metadata.value
    )


def test_the_stand_in_parses_back_to_the_original_bytes() -> None:
    operation = operations_pb2.Operation(name="operations/1", metadata=hidden(b"\x00\xffraw"))
    parsed = json_format.Parse(AnyRenderer().render(operation).text, operations_pb2.Operation())
    info = error_details_pb2.ErrorInfo()
    assert parsed.metadata.Unpack(info)
    restored = any_pb2.Any(
        type_url=info.metadata["typeUrl"], value=base64.b64decode(info.metadata["value"])
    )
    assert restored == operation.metadata


def test_bytes_that_do_not_parse_as_their_type_are_kept_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = "type.googleapis.com/google.rpc.ErrorInfo"
    operation = operations_pb2.Operation(metadata=any_pb2.Any(type_url=url, value=b"\xff"))
    rendered = AnyRenderer().render(operation)
    assert json.loads(rendered.text)["metadata"] == stand_in(url, b"\xff")
    assert "do not parse" in caplog.text


def test_one_warning_per_type_url(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="opsgate.rest")
    renderer = AnyRenderer()
    other = "type.googleapis.com/acme.hidden.v1.Other"
    for _ in range(3):
        renderer.render(operations_pb2.Operation(metadata=hidden(), response=hidden()))
    renderer.render(operations_pb2.Operation(metadata=any_pb2.Any(type_url=other)))
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert [HIDDEN in r.getMessage() for r in warnings] == [True, False]
    assert other in warnings[1].getMessage()


def test_the_header_is_one_safe_line_of_bounded_size() -> None:
    urls = ("a/x,y", "b/\r\nInjected: 1", "c/é", "d/ok")
    assert Rendered("", urls).headers() == {
        UNRESOLVED_HEADER: "a/x%2Cy,b/%0D%0AInjected:%201,c/%C3%A9,d/ok"
    }
    many = tuple(f"type.googleapis.com/acme.v1.T{index:04}" for index in range(1000))
    value = Rendered("", many).headers()[UNRESOLVED_HEADER]
    assert len(value) <= 4096
    assert value.split(",") == list(many[: len(value.split(","))])


# -- descriptor sets and modules: checked at config load


def _config(tmp_path: Path, rest: str) -> Path:
    (tmp_path / "jwks.json").write_text('{"keys": []}')
    (tmp_path / "policy.yaml").write_text("allow: []\n")
    path = tmp_path / "opsgate.yaml"
    path.write_text(
        "upstream: {target: 127.0.0.1:1}\n"
        "authentication:\n  issuers:\n    - {issuer: https://idp, audiences: [a], "
        "jwks_file: jwks.json}\n"
        "authorization: {policy_file: policy.yaml}\n"
        f"rest:\n  listen: 127.0.0.1:0\n{rest}"
    )
    return path


def _problem(tmp_path: Path, rest: str) -> str:
    path = _config(tmp_path, rest)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    message = str(err.value)
    assert message.startswith(f"{path}:"), message
    return message


def test_sets_and_modules_load_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "apis").mkdir()
    write_set(tmp_path / "apis" / "holder.pb", holder_file())
    rest = "  descriptor_sets: [apis/holder.pb]\n  type_modules: [google.rpc.code_pb2]\n"
    settings = load_settings(_config(tmp_path, rest))
    assert settings.rest is not None
    assert settings.rest.descriptor_sets == (tmp_path / "apis" / "holder.pb",)
    assert settings.rest.type_modules == ("google.rpc.code_pb2",)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, r"key 'rest.descriptor_sets\[0\]': file '.*missing.pb' does not exist"),
        (b"hello: world\n", r"key 'rest.descriptor_sets': .*bad.pb is not a FileDescriptorSet"),
        (b"", r"key 'rest.descriptor_sets': .*bad.pb is not a FileDescriptorSet: it holds no"),
    ],
    ids=["missing", "corrupt", "empty"],
)
def test_an_unusable_set_stops_start_up(
    tmp_path: Path, content: bytes | None, expected: str
) -> None:
    name = "missing.pb" if content is None else "bad.pb"
    if content is not None:
        (tmp_path / name).write_bytes(content)
    message = _problem(tmp_path, f"  descriptor_sets: [{name}]\n")
    assert re.search(expected, message), message


def test_a_set_without_its_imports_stops_start_up(tmp_path: Path) -> None:
    lonely = holder_file()
    lonely.dependency.append("acme/v1/not_in_the_set.proto")
    path = tmp_path / "lonely.pb"
    path.write_bytes(descriptor_pb2.FileDescriptorSet(file=[lonely]).SerializeToString())
    message = _problem(tmp_path, "  descriptor_sets: [lonely.pb]\n")
    assert "acme/v1/holder.proto cannot be used" in message
    assert "not_in_the_set.proto" in message
    assert "--include_imports" in message


def test_two_sets_giving_one_file_differently_stop_start_up(tmp_path: Path) -> None:
    write_set(tmp_path / "a.pb", holder_file())
    changed = holder_file()
    changed.message_type[0].field.add(name="extra", number=9, label=OPTIONAL, type=STRING)
    write_set(tmp_path / "b.pb", changed)
    message = _problem(tmp_path, "  descriptor_sets: [a.pb, b.pb]\n")
    assert "b.pb: acme/v1/holder.proto differs from the one in" in message
    assert "a.pb" in message


def test_a_symbol_defined_twice_stops_start_up(tmp_path: Path) -> None:
    write_set(tmp_path / "a.pb", holder_file(), holder_file("acme/v1/copy.proto"))
    message = _problem(tmp_path, "  descriptor_sets: [a.pb]\n")
    assert "duplicate symbol 'acme.v1.Holder'" in message


def test_files_this_process_already_has_load_as_copies_or_versions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="opsgate.rest")
    # The same file as protoc writes it (json_name set) and as the runtime copies it: a copy.
    copied = descriptor_pb2.FileDescriptorSet.FromString(
        descriptor_set(timestamp_pb2.Timestamp.DESCRIPTOR)
    )
    for field in copied.file[0].message_type[0].field:
        field.json_name = field.name
    (tmp_path / "copy.pb").write_bytes(copied.SerializeToString())
    # Another version of a file this process has (as protoc's descriptor.proto often is).
    version = descriptor_pb2.FileDescriptorSet.FromString(
        descriptor_set(error_details_pb2.ErrorInfo.DESCRIPTOR)
    )
    version.file[-1].options.java_package = "com.acme.elsewhere"
    (tmp_path / "version.pb").write_bytes(version.SerializeToString())
    pool = type_pool([tmp_path / "copy.pb", tmp_path / "version.pb"])
    assert pool is not None
    assert pool.FindMessageTypeByName("google.rpc.ErrorInfo").file.GetOptions().java_package == (
        "com.acme.elsewhere"
    )
    assert "google/rpc/error_details.proto differs" in caplog.text
    assert "timestamp.proto" not in caplog.text
    # This process's own types are untouched.
    assert error_details_pb2.DESCRIPTOR.GetOptions().java_package == "com.google.rpc"


def test_a_set_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(TypeSourceError, match=r"cannot be read"):
        type_pool([tmp_path])  # a directory: what a permission error looks like to root


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("acme_not_installed", "cannot import module 'acme_not_installed': No module named"),
        ("google.rpc.nothing_pb2", "cannot import module 'google.rpc.nothing_pb2'"),
    ],
    ids=["unknown", "unknown-submodule"],
)
def test_an_unknown_module_stops_start_up(tmp_path: Path, module: str, expected: str) -> None:
    message = _problem(tmp_path, f"  type_modules: [{module}]\n")
    assert f"key 'rest.type_modules': {expected}" in message


def test_serve_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.pb").write_bytes(b"\x00garbage")
    assert main(["serve", "--config", str(_config(tmp_path, "  descriptor_sets: [bad.pb]\n"))]) == 2
    error = capsys.readouterr().err
    assert "key 'rest.descriptor_sets'" in error
    assert "bad.pb is not a FileDescriptorSet" in error
