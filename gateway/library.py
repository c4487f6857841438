"""Library mode: the opsgate checks inside your own grpc.aio server, with no proxy hop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from gateway.authn.principal import Principal
from gateway.call import current_call
from gateway.config import Settings, load_settings
from gateway.headers import DEFAULT_IDENTITY_HEADER, GatewayHeaders, Metadata
from gateway.interceptors.chain import is_operations_method
from gateway.interceptors.stage import Behavior, Stage
from gateway.outcome import OutcomeSink
from gateway.pipeline import Pipeline, build_pipeline

# The stable surface of library mode; everything else in the package is internal.
__all__ = ["OpsgateChain", "Principal", "current_principal"]


class OpsgateChain:
    """The interceptors to pass to grpc.aio.server(interceptors=...), built from a config file.

    Example::

        chain = OpsgateChain.from_config("opsgate.yaml")
        server = grpc.aio.server(interceptors=chain.interceptors)
        operations_pb2_grpc.add_OperationsServicer_to_server(MyOperations(), server)
        await chain.prefetch()      # optional: fetch issuers' keys before the first call
        ...
        await server.stop(grace)
        chain.close()               # every audit record written

    The servicer sees the caller's metadata without any spelling of a header the gateway sets
    (the identity header among them): it learns who the caller is from current_principal().
    """

    def __init__(
        self, pipeline: Pipeline, identity_header: str | None = DEFAULT_IDENTITY_HEADER
    ) -> None:
        self.pipeline = pipeline
        self._servicer_view = _ServicerMetadataStage(
            is_operations_method, GatewayHeaders(identity_header)
        )

    @classmethod
    def from_config(cls, path: str | Path, sink: OutcomeSink | None = None) -> OpsgateChain:
        settings = load_settings(Path(path), require_upstream=False)
        return cls.from_settings(settings, sink)

    @classmethod
    def from_settings(cls, settings: Settings, sink: OutcomeSink | None = None) -> OpsgateChain:
        return cls(build_pipeline(settings, sink), settings.authentication.identity_header)

    @property
    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [*self.pipeline.chain, self._servicer_view]

    async def prefetch(self) -> None:
        await self.pipeline.authn.prefetch()

    def close(self, timeout: float = 30.0) -> bool:
        """Write every pending audit record and stop the writer; call after server.stop()."""
        return self.pipeline.audit.writer.close(timeout)


def current_principal() -> Principal | None:
    """Inside a servicer method behind the chain: the verified caller of this call."""
    call = current_call.get(None)
    return call.principal if call is not None else None


class _ServicerMetadataStage(Stage):
    """The innermost stage in library mode: hands the servicer a context whose metadata has no
    smuggled keys. The proxy's forwarder drops them itself; here nothing else would."""

    name = "servicer-metadata"

    def __init__(self, applies: Callable[[str], bool], headers: GatewayHeaders) -> None:
        super().__init__(applies)
        self._headers = headers

    def wrap(self, behavior: Behavior, method: str) -> Behavior:
        scrub = self._headers.without_smuggled

        async def scrubbed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            metadata = context.invocation_metadata() or ()
            kept = scrub(metadata)
            if len(kept) == len(metadata):  # the usual case: the servicer gets grpc's own context
                return await behavior(request, context)
            return await behavior(request, _MetadataView(context, kept))

        return scrubbed


class _MetadataView:
    """A servicer context that shows `metadata` as the call's and is otherwise the call's own."""

    __slots__ = ("_context", "_metadata")

    def __init__(self, context: grpc.aio.ServicerContext, metadata: Metadata) -> None:
        self._context = context
        self._metadata = metadata

    def invocation_metadata(self) -> Metadata:
        return self._metadata

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)
