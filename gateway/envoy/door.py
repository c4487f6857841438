"""The Envoy door: Envoy's Check and access-log streams, translated to and from the pipeline's Call.

Check builds a Call from what Envoy forwards (the headers, the peer and its certificate, the
request body as one gRPC frame) and runs the very stages every other door runs; the answer lets
the call through or refuses it as opsgate's own door would. Envoy's access-log stream ends the
records of the calls it let through (completion.py); the compiled tier's access log (another
log name) gives each of its calls a record of its own (compiled/ledger.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from gateway.authn.certificates import PEM_KEY
from gateway.authn.settings import AuthnSettings
from gateway.call import Call, new_call, request_id_prefix
from gateway.envoy.answers import Allow, Answers, Refuse, caller_header_names
from gateway.envoy.body import request_message
from gateway.envoy.compiled.ledger import CompiledLedger, grpc_peer
from gateway.envoy.compiled.resources import COMPILED_LOG_NAME
from gateway.envoy.completion import CompletionJoin, ending_of, join_key_of
from gateway.envoy.handoff import Handoff
from gateway.envoy.metrics import EnvoyCollector
from gateway.envoy.protos import (
    ACCESS_LOG_METHOD,
    CHECK_METHOD,
    CheckRequest,
    CheckResponse,
    HTTPAccessLogEntry,
    StreamAccessLogsMessage,
    StreamAccessLogsResponse,
)
from gateway.envoy.settings import (
    CALL_ID_KEY,
    DOOR_KEY,
    METADATA_NAMESPACE,
    REST_DOOR,
    EnvoySettings,
)
from gateway.errors import CallFailure
from gateway.outcome import CallOutcome
from gateway.pipeline import Pipeline
from gateway.routing import METHODS_BY_PATH
from gateway.stages.chain import Runner, is_operations_method

log = logging.getLogger("opsgate.envoy")

# Envoy's response_code_details when ext_authz could not get an answer (down, slow, broken).
AUTHORIZER_FAILED = "ext_authz_error"
AUTHORIZER_UNREACHABLE_REASON = "AUTHORIZER_UNREACHABLE"
AUTHORIZER_UNREACHABLE_MESSAGE = "Envoy could not reach the authorizer and refused the call."


class EnvoyTransport:
    """The connection Envoy saw (its downstream peer and certificate) and the check's own
    deadline and cancellation, as the stages ask for them (the Transport)."""

    __slots__ = ("_cancelled", "_peer", "_pem", "_remaining", "rest")

    def __init__(
        self,
        peer: str | None,
        pem: bytes,
        rest: bool,
        remaining: Callable[[], float | None],
        cancelled: Callable[[], bool],
    ) -> None:
        self._peer = peer
        # Envoy sends the downstream's certificate only when the TLS handshake presented one;
        # it is a verified identity only if that listener verifies client certificates (the
        # generated config does when client certificates are configured).
        self._pem = pem
        self.rest = rest  # the call came in by the REST listener
        self._remaining = remaining
        self._cancelled = cancelled

    def peer(self) -> str | None:
        return self._peer

    def auth_context(self) -> Mapping[str, Sequence[bytes]]:
        return {PEM_KEY: (self._pem,)} if self._pem else {}

    def time_remaining(self) -> float | None:
        return self._remaining()

    def cancelled(self) -> bool:
        return self._cancelled()


class EnvoyDoor:
    """Serves envoy.service.auth.v3.Authorization/Check and the access-log service."""

    def __init__(
        self,
        runner: Runner,
        join: CompletionJoin,
        answers: Answers,
        settings: EnvoySettings,
        workers_dir: Path | None = None,
        ledger: CompiledLedger | None = None,
    ) -> None:
        self._runner = runner
        self._join = join
        self._answers = answers
        self._settings = settings
        self._ledger = ledger  # the compiled tier's records; None: its log is ignored
        self._handoff = (
            Handoff(workers_dir, request_id_prefix(), self._handed_over) if workers_dir else None
        )

    @classmethod
    def build(
        cls,
        settings: EnvoySettings,
        authentication: AuthnSettings,
        pipeline: Pipeline,
        workers_dir: Path | None = None,
    ) -> EnvoyDoor:
        """The door over `pipeline`'s stages, its records ended by Envoy's access log; with
        `workers_dir`, one of `serve --workers N` (see handoff.py)."""
        join = CompletionJoin(pipeline.outcomes, settings.completion_timeout_s, _transcoded)
        answers = Answers(
            identity_header=authentication.identity_header,
            forward_authorization=authentication.forward_authorization,
            join_key=join.keys.key,
        )
        ledger = CompiledLedger.build(
            authentication, pipeline.profile, pipeline.audit, pipeline.policies
        )
        runner = pipeline.runner_recording_to(join)
        door = cls(runner, join, answers, settings, workers_dir, ledger)
        pipeline.registry.register(EnvoyCollector(join, door._handoff, ledger))
        return door

    @property
    def join(self) -> CompletionJoin:
        return self._join

    @property
    def ledger(self) -> CompiledLedger | None:
        return self._ledger

    async def start(self) -> None:
        if self._handoff is not None:
            await self._handoff.start()

    async def expire_overdue(self) -> None:
        """Write the records Envoy never reported the ending of, as they fall due."""
        await self._join.watch()

    async def reported(self, grace: float) -> float:
        """Wait up to `grace` seconds for Envoy to report every call it let through; the
        seconds waited."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._join.emptied.wait(), grace)
        return loop.time() - started

    async def stop(self) -> None:
        """The door is closed: records still waiting are written, marked as not reported."""
        if self._handoff is not None:
            await self._handoff.stop()
        self._join.flush()

    def handlers(self) -> tuple[grpc.GenericRpcHandler, ...]:
        """The two services, taking and answering serialized messages (see protos.py)."""
        check_service, check = CHECK_METHOD.strip("/").split("/")
        log_service, stream = ACCESS_LOG_METHOD.strip("/").split("/")
        return (
            grpc.method_handlers_generic_handler(
                check_service, {check: grpc.unary_unary_rpc_method_handler(self.check)}
            ),
            grpc.method_handlers_generic_handler(
                log_service, {stream: grpc.stream_unary_rpc_method_handler(self.access_logs)}
            ),
        )

    async def decide(
        self,
        path: str,
        verb: str,
        headers: Mapping[str, str],
        body: bytes,
        transport: EnvoyTransport,
    ) -> Allow | Refuse:
        """One check, whichever protocol Envoy asked it in: the call through the pipeline's
        stages, and the answer to give Envoy."""
        method = path.partition("?")[0]
        metadata = tuple((key, value) for key, value in headers.items() if key[0] != ":")
        call = new_call(method, metadata, transport, None)
        answers = self._answers
        rest = transport.rest
        if not _is_grpc(verb, headers) or not _served(method):
            # As the proxy answers a method nobody serves: nothing behind Envoy is allowed by
            # default, not health checks, not other services, not plain HTTP.
            return answers.refused(call, self._runner.not_found(call), rest)
        limit = self._settings.max_body_bytes

        def take_body(call: Call) -> None:
            call.payload = request_message(body, headers, limit)

        async def allow(call: Call) -> Allow:
            return answers.allowed(call, caller_header_names(headers))

        try:
            return await self._runner.run(call, (take_body, *self._runner.steps(method)), allow)
        except CallFailure as failure:
            return answers.refused(call, failure, rest)

    async def check(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """envoy.service.auth.v3.Authorization/Check."""
        attributes = CheckRequest.FromString(request).attributes
        http = attributes.request.http
        source = attributes.source
        transport = EnvoyTransport(
            grpc_peer(source.address),
            urllib.parse.unquote(source.certificate).encode() if source.certificate else b"",
            attributes.context_extensions.get(DOOR_KEY) == REST_DOOR,
            context.time_remaining,
            context.cancelled,
        )
        body = http.raw_body or http.body  # `body` without pack_as_bytes (see body.py)
        answer = await self.decide(http.path, http.method, http.headers, body, transport)
        return bytes(check_response(answer).SerializeToString())

    async def access_logs(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        """One of Envoy's access-log streams: each entry ends the record of the call it names;
        each entry of the compiled tier's log is its call's whole record."""
        wanted = self._settings.log_name
        ours: bool | None = None  # the log name comes in the stream's first message only
        compiled = False
        join = self._join
        handoff = self._handoff
        ledger = self._ledger
        async for request in requests:
            message = StreamAccessLogsMessage.FromString(request)
            if message.HasField("identifier"):
                log_name = message.identifier.log_name
                ours = log_name == wanted
                compiled = not ours and ledger is not None and log_name == COMPILED_LOG_NAME
                if not ours and not compiled:
                    log.warning("ignoring Envoy access log %r", log_name)
            if compiled and ledger is not None:
                # Each entry is queued whole before the next is read: a stream cut (or this
                # gateway stopping) never leaves one half-recorded.
                for entry in message.http_logs.log_entry:
                    ledger.record(entry)
                continue
            if not ours:
                continue
            for entry in message.http_logs.log_entry:
                common = entry.common_properties
                if common.intermediate_log_entry:
                    continue
                key = join_key_of(common.metadata.filter_metadata, METADATA_NAMESPACE, CALL_ID_KEY)
                if key is None:
                    if entry.response.response_code_details.startswith(AUTHORIZER_FAILED):
                        self._record_unreached(entry)
                    continue
                if handoff is None or handoff.owned(key):
                    join.complete(key, entry)
                else:
                    await handoff.pass_on(key, entry.SerializeToString())
        return bytes(StreamAccessLogsResponse().SerializeToString())

    def _record_unreached(self, entry: Any) -> None:
        """A call Envoy refused because it could not ask the authorizer: opsgate never saw it,
        but it is recorded all the same (no principal, no resource) once Envoy reports it."""
        peer = grpc_peer(entry.common_properties.downstream_remote_address)
        transport = EnvoyTransport(peer, b"", False, _no_deadline, _not_cancelled)
        call = new_call(entry.request.path, (), transport, None)
        ending = ending_of(entry, rest=False)
        latency = ending.latency_s if ending.latency_s is not None else 0.0
        self._join.record(
            CallOutcome(
                call,
                ending.code,
                AUTHORIZER_UNREACHABLE_MESSAGE,
                latency,
                ending.detail,
                AUTHORIZER_UNREACHABLE_REASON,
            )
        )

    def _handed_over(self, key: str, entry: bytes) -> None:
        try:
            self._join.complete(key, HTTPAccessLogEntry.FromString(entry))
        except DecodeError:
            log.warning("unreadable access-log entry handed over for request_id=%s", key[:32])


OVERWRITE_IF_EXISTS_OR_ADD = 2  # envoy.config.core.v3.HeaderValueOption.HeaderAppendAction


def check_response(answer: Allow | Refuse) -> Any:
    """The gRPC protocol's CheckResponse for an answer."""
    response = CheckResponse()
    if isinstance(answer, Allow):
        ok = response.ok_response
        _set(ok.headers, answer.upstream_set)
        ok.headers_to_remove.extend(answer.upstream_removed)
        _set(ok.response_headers_to_add, answer.to_caller)
        response.dynamic_metadata.fields[CALL_ID_KEY].string_value = answer.join_key
        return response
    response.status.code = int(answer.code)
    denied = response.denied_response
    denied.status.code = answer.http_status
    denied.body = answer.body
    _set(denied.headers, answer.headers)
    return response


def _set(options: Any, headers: Iterable[tuple[str, str]]) -> None:
    for key, value in headers:
        option = options.add()
        option.header.key = key
        option.header.value = value
        option.append_action = OVERWRITE_IF_EXISTS_OR_ADD


def _no_deadline() -> float | None:
    return None


def _not_cancelled() -> bool:
    return False


def _transcoded(outcome: CallOutcome) -> bool:
    """The call came in by the REST listener (Envoy transcoded it): its ending is an HTTP one."""
    transport = outcome.call.transport
    return isinstance(transport, EnvoyTransport) and transport.rest


def _is_grpc(verb: str, headers: Mapping[str, str]) -> bool:
    content_type = headers.get("content-type", "")
    return verb == "POST" and (
        content_type == "application/grpc" or content_type.startswith("application/grpc+")
    )


def _served(method: str) -> bool:
    return method in METHODS_BY_PATH and is_operations_method(method)
