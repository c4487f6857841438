"""Library mode: the opsgate checks inside your own grpc.aio server, with no proxy hop."""

from __future__ import annotations

from pathlib import Path

import grpc

from gateway.authn.principal import Principal
from gateway.call import current_call
from gateway.config import Settings, load_settings
from gateway.headers import DEFAULT_IDENTITY_HEADER, GatewayHeaders
from gateway.interceptors.chain import ChainInterceptor
from gateway.outcome import OutcomeSink
from gateway.pipeline import Pipeline, build_pipeline

# The stable surface of library mode; everything else in the package is internal.
__all__ = ["OpsgateChain", "Principal", "current_principal"]


class OpsgateChain:
    """The interceptor to pass to grpc.aio.server(interceptors=...), built from a config file.

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
        self._interceptor = ChainInterceptor(
            pipeline.runner, servicer_headers=GatewayHeaders(identity_header)
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
        """One interceptor running the whole chain (audit, authn, ratelimit, route, authz)."""
        return [self._interceptor]

    async def prefetch(self) -> None:
        await self.pipeline.authn.prefetch()

    def close(self, timeout: float = 30.0) -> bool:
        """Write every pending audit record and stop the writer; call after server.stop()."""
        return self.pipeline.audit.writer.close(timeout)


def current_principal() -> Principal | None:
    """Inside a servicer method behind the chain: the verified caller of this call."""
    call = current_call.get(None)
    return call.principal if call is not None else None
