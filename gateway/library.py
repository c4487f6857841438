"""Library mode: the opsgate checks inside your own grpc.aio server, with no proxy hop."""

from __future__ import annotations

from pathlib import Path

import grpc

from gateway.authn.principal import Principal
from gateway.config import Settings, load_settings
from gateway.interceptors.call import current_call
from gateway.interceptors.outcome import OutcomeSink
from gateway.pipeline import Pipeline, build_pipeline


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
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    @classmethod
    def from_config(cls, path: str | Path, sink: OutcomeSink | None = None) -> OpsgateChain:
        settings = load_settings(Path(path), require_upstream=False)
        return cls.from_settings(settings, sink)

    @classmethod
    def from_settings(cls, settings: Settings, sink: OutcomeSink | None = None) -> OpsgateChain:
        return cls(build_pipeline(settings, sink))

    @property
    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return list(self.pipeline.chain)

    async def prefetch(self) -> None:
        await self.pipeline.authn.prefetch()

    def close(self, timeout: float = 30.0) -> bool:
        """Write every pending audit record and stop the writer; call after server.stop()."""
        return self.pipeline.audit.writer.close(timeout)


def current_principal() -> Principal | None:
    """Inside a servicer method behind the chain: the verified caller of this call."""
    call = current_call.get(None)
    return call.principal if call is not None else None
