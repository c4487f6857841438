"""One exception tree: every gateway exception is an OpsgateError with a reason; messages once.

Read from the code itself, so a new exception class or a retyped public message fails here.
KNOWN_REPEATS is a ratchet, as in test_import_direction: it only shrinks.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
from google.rpc import error_details_pb2, status_pb2

import gateway
from gateway import errors
from gateway.errors import (
    INVALID_CREDENTIALS_MESSAGE,
    REASON_PATTERN,
    STATUS_DETAILS_KEY,
    UNAVAILABLE_MESSAGE,
    UNIMPLEMENTED_MESSAGE,
    CallFailure,
    OpsgateError,
    RelayedStatus,
    StatusCode,
)

PACKAGE = Path(gateway.__file__).parent

# `python -m gateway` runs the CLI when imported; it defines no classes.
NOT_IMPORTED = frozenset({"gateway.__main__"})


def _modules() -> list[str]:
    names = ["gateway"]
    for info in pkgutil.walk_packages(gateway.__path__, "gateway."):
        if info.name not in NOT_IMPORTED:
            names.append(info.name)
    return sorted(names)


def _exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in _modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == name
                and not attr.startswith("_")  # private control-flow signals stay outside
            ):
                found[f"{name}.{attr}"] = value
    return found


EXCEPTIONS = _exception_classes()


def test_the_walk_finds_the_tree() -> None:
    # Guards the walk itself: it must see classes in subpackages as well as in errors.py.
    assert "gateway.errors.ConfigError" in EXCEPTIONS
    assert "gateway.policy.cel.errors.ConditionError" in EXCEPTIONS
    assert "gateway.reference_upstream.server.ListenError" in EXCEPTIONS


@pytest.mark.parametrize("cls", EXCEPTIONS.values(), ids=list(EXCEPTIONS))
def test_every_gateway_exception_is_an_opsgate_error(cls: type[BaseException]) -> None:
    assert issubclass(cls, OpsgateError), f"{cls.__qualname__} must derive from OpsgateError"


@pytest.mark.parametrize("cls", EXCEPTIONS.values(), ids=list(EXCEPTIONS))
def test_every_gateway_exception_has_a_reason(cls: type[BaseException]) -> None:
    reason = getattr(cls, "reason", None)
    assert isinstance(reason, str)
    assert REASON_PATTERN.fullmatch(reason), f"{cls.__qualname__}.reason {reason!r}"


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        ("gateway.rest.transcode.BadRequest", ValueError),
        ("gateway.policy.cel.errors.ConditionError", ValueError),
        ("gateway.authn.keys.JwksError", ValueError),
        ("gateway.pathtemplate.TemplateError", ValueError),
        ("gateway.reference_upstream.errors.OperationExists", ValueError),
        ("gateway.reference_upstream.errors.OperationNotFound", LookupError),
        ("gateway.audit.sinks.PartialWriteError", OSError),
        ("gateway.reference_upstream.server.ListenError", OSError),
    ],
    ids=lambda value: value.rsplit(".", 1)[-1] if isinstance(value, str) else value.__name__,
)
def test_builtin_bases_stay_for_existing_callers(cls: str, builtin: type[Exception]) -> None:
    assert issubclass(EXCEPTIONS[cls], builtin)


def test_an_oserror_subclass_keeps_its_fields() -> None:
    from gateway.audit.sinks import PartialWriteError

    cause = OSError(28, "No space left on device", "/var/log/audit.jsonl")
    error = PartialWriteError(3, cause)
    assert (error.errno, error.strerror, error.filename, error.written) == (
        28,
        "No space left on device",
        "/var/log/audit.jsonl",
        3,
    )
    assert error.reason == "AUDIT_WRITE_PARTIAL"


_ERROR_INFO = error_details_pb2.ErrorInfo

# Instances that narrow their class's reason: the constructor helpers, whose reasons are on the wire.
HELPERS = {
    "credentials_missing": (errors.credentials_missing("d"), "CREDENTIALS_MISSING"),
    "token_invalid": (errors.token_invalid("d"), "JWT_TOKEN_INVALID"),
    "token_expired": (errors.token_expired(), "ACCESS_TOKEN_EXPIRED"),
    "token_type_unsupported": (errors.token_type_unsupported("d"), "ACCESS_TOKEN_TYPE_UNSUPPORTED"),
    "scope_insufficient": (errors.scope_insufficient("d"), "ACCESS_TOKEN_SCOPE_INSUFFICIENT"),
    "verification_unavailable": (
        errors.verification_unavailable("d"),
        "AUTHENTICATION_BACKEND_UNAVAILABLE",
    ),
    "upstream_unavailable": (errors.upstream_unavailable(), "UPSTREAM_UNAVAILABLE"),
    "audit_unavailable": (errors.audit_unavailable(), "AUDIT_UNAVAILABLE"),
    "unimplemented": (errors.unimplemented("/x.Y/Z"), "METHOD_NOT_IMPLEMENTED"),
    "permission_denied": (errors.permission_denied("p", "r", "s", "d"), "IAM_PERMISSION_DENIED"),
    "rate_limited": (errors.rate_limited("per-principal", 1.0), "RATE_LIMIT_EXCEEDED"),
}


@pytest.mark.parametrize(("failure", "reason"), HELPERS.values(), ids=list(HELPERS))
def test_helpers_put_their_reason_on_the_wire(failure: errors.RpcError, reason: str) -> None:
    assert failure.reason == reason
    (info,) = [d for d in failure.to_status().details if d.Is(_ERROR_INFO.DESCRIPTOR)]
    unpacked = _ERROR_INFO()
    info.Unpack(unpacked)
    assert unpacked.reason == reason


def test_unimplemented_says_which_method_in_the_log_only() -> None:
    failure = errors.unimplemented("/x.Y/Z")
    assert (failure.code, failure.message) == (StatusCode.UNIMPLEMENTED, UNIMPLEMENTED_MESSAGE)
    assert failure.log_detail == "/x.Y/Z is not routed"
    assert errors.unimplemented("/x.Y/Z", "why").log_detail == "why"


def test_upstream_unavailable_is_googles_wording() -> None:
    failure = errors.upstream_unavailable()
    assert (failure.code, failure.message) == (StatusCode.UNAVAILABLE, UNAVAILABLE_MESSAGE)


# RelayedStatus: the upstream's own reason, else UPSTREAM_STATUS; never what an upstream makes up.


def _details(reason: str) -> tuple[tuple[str, str | bytes], ...]:
    status = status_pb2.Status(code=int(StatusCode.NOT_FOUND), message="gone")
    status.details.add().Pack(_ERROR_INFO(reason=reason, domain="upstream.example"))
    return (("x-other", "1"), (STATUS_DETAILS_KEY, status.SerializeToString()))


@pytest.mark.parametrize(
    ("trailing", "reason"),
    [
        ((), "UPSTREAM_STATUS"),
        (_details("OPERATION_GONE"), "OPERATION_GONE"),
        (_details(""), "UPSTREAM_STATUS"),
        (_details("not a reason"), "UPSTREAM_STATUS"),
        (_details("A" * 64), "UPSTREAM_STATUS"),
        (((STATUS_DETAILS_KEY, b"\xff\xff not a status"),), "UPSTREAM_STATUS"),
        (((STATUS_DETAILS_KEY, "text, not bytes"),), "UPSTREAM_STATUS"),
    ],
    ids=["none", "relayed", "empty", "malformed", "too-long", "undecodable", "not-binary"],
)
def test_relayed_status_reason(trailing: tuple[tuple[str, str | bytes], ...], reason: str) -> None:
    failure: CallFailure = RelayedStatus(StatusCode.NOT_FOUND, "gone", trailing)
    assert failure.reason == reason
    assert failure.trailing_metadata() == trailing  # relayed exactly as it came


def test_wire_messages_are_googles() -> None:
    assert errors.token_invalid("d").message == INVALID_CREDENTIALS_MESSAGE
    assert errors.verification_unavailable("d").message == UNAVAILABLE_MESSAGE


# Google's public wording lives in errors.py as the *_MESSAGE constants and nowhere else.
MESSAGES = {
    name: value
    for name, value in vars(errors).items()
    if name.endswith("_MESSAGE") and isinstance(value, str)
}

# Literals that still stand in modules being rewritten by other work of issue 16; each is to be
# replaced by the errors.py constant (or helper) and then removed here. Never to be added to.
KNOWN_REPEATS: set[tuple[str, str]] = set()


def _message_literals() -> list[tuple[str, str]]:
    """(module path, constant name) for every string literal equal to a public message."""
    by_value = {value: name for name, value in MESSAGES.items()}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE.parent).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in by_value:
                found.append((module, by_value[node.value]))
    return found


def test_the_public_messages_are_known() -> None:
    assert {"UNAVAILABLE_MESSAGE", "INTERNAL_MESSAGE", "UNIMPLEMENTED_MESSAGE"} <= set(MESSAGES)
    assert len(set(MESSAGES.values())) == len(MESSAGES), "two constants spell one message"


def test_each_public_message_is_written_once() -> None:
    found = _message_literals()
    in_errors = [name for module, name in found if module == "gateway/errors.py"]
    assert sorted(in_errors) == sorted(MESSAGES), "each message is written once, in errors.py"
    elsewhere = {(module, name) for module, name in found if module != "gateway/errors.py"}
    new = sorted(elsewhere - KNOWN_REPEATS)
    assert not new, f"import these from gateway.errors instead of retyping them: {new}"


def test_known_repeats_still_exist() -> None:
    elsewhere = set(_message_literals())
    gone = sorted(KNOWN_REPEATS - elsewhere)
    assert not gone, f"remove these from KNOWN_REPEATS, the code no longer has them: {gone}"
