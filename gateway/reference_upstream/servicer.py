"""The grpc.aio google.longrunning.Operations servicer over an OperationStore; logs each call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import empty_pb2
from grpc_status import rpc_status

from gateway.reference_upstream.calls import CallLog, CallRecord, Metadata
from gateway.reference_upstream.errors import RequestError
from gateway.reference_upstream.listing import encode_page_token, list_query
from gateway.reference_upstream.store import OperationStore

_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _metadata(context: grpc.aio.ServicerContext) -> Metadata:
    return tuple((key, value) for key, value in context.invocation_metadata() or ())


# The generated servicer base is untyped (Any) to mypy.
class ReferenceOperationsServicer(operations_pb2_grpc.OperationsServicer):  # type: ignore[misc]
    """Answers the five Operations RPCs from the store, as a Google API would."""

    def __init__(self, store: OperationStore, calls: CallLog) -> None:
        self._store = store
        self._calls = calls

    @asynccontextmanager
    async def _handling(
        self, method: str, name: str, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[None]:
        """Runs one RPC body: injected fault first, errors to statuses, and a CallRecord."""
        outcome, failure = "ok", None
        try:
            self._store.check_fault(name)
            yield
        except asyncio.CancelledError:
            outcome = "CANCELLED"  # the caller went away or its deadline ran out
            raise
        except RequestError as exc:
            outcome, failure = _CODE_NAMES.get(exc.status.code, "UNKNOWN"), exc.status
        except Exception:
            outcome = "UNKNOWN"  # a bug here: grpc answers UNKNOWN, the log should say so
            raise
        finally:
            # Logged before any status goes out (abort sends it at once), so a caller that
            # has its answer can already see the record.
            self._calls.record(CallRecord(method, name, outcome, _metadata(context)))
        if failure is not None:
            # to_status also sends the Status itself as grpc-status-details-bin, details and all.
            await context.abort_with_status(rpc_status.to_status(failure))

    async def GetOperation(
        self, request: operations_pb2.GetOperationRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.Operation:
        async with self._handling("GetOperation", request.name, context):
            return self._store.get(request.name)

    async def ListOperations(
        self, request: operations_pb2.ListOperationsRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.ListOperationsResponse:
        async with self._handling("ListOperations", request.name, context):
            query = list_query(request.name, request.filter, request.page_size, request.page_token)
            page = self._store.list_page(query)
            response = operations_pb2.ListOperationsResponse(operations=page.operations)
            if page.more:
                last = page.operations[-1].name
                response.next_page_token = encode_page_token(query.parent, query.done, last)
            return response

    async def CancelOperation(
        self, request: operations_pb2.CancelOperationRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        async with self._handling("CancelOperation", request.name, context):
            self._store.cancel(request.name)
            return empty_pb2.Empty()

    async def DeleteOperation(
        self, request: operations_pb2.DeleteOperationRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        async with self._handling("DeleteOperation", request.name, context):
            self._store.delete(request.name)
            return empty_pb2.Empty()

    async def WaitOperation(
        self, request: operations_pb2.WaitOperationRequest, context: grpc.aio.ServicerContext
    ) -> operations_pb2.Operation:
        async with self._handling("WaitOperation", request.name, context):
            # Unset timeout: wait until done, bounded only by the call's own deadline.
            max_wait = (
                request.timeout.ToTimedelta().total_seconds()
                if request.HasField("timeout")
                else None
            )
            return await self._store.wait(request.name, max_wait)
