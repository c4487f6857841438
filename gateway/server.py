"""Assembles and runs the gateway: listener, doors, pipeline, forwarder, health, drain on signal."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health

from gateway import runtime
from gateway.config import ServerTls, Settings
from gateway.envoy.door import EnvoyDoor
from gateway.envoy.http_check import HttpCheckServer, start_http_check
from gateway.envoy.settings import EnvoySettings
from gateway.errors import ConfigError
from gateway.interceptors.chain import ChainInterceptor
from gateway.observability.health import (
    HealthListener,
    add_health_service,
    ready_with_workers,
    start_health_listener,
    start_not_ready,
    track_readiness,
)
from gateway.observability.metrics_server import MetricsServer
from gateway.observability.workers import WorkerCounts, WorkersCollector
from gateway.outcome import OutcomeSink
from gateway.pipeline import Pipeline, build_pipeline
from gateway.rest.server import RestDoor, start_rest_door
from gateway.rest.tls import server_ssl_context
from gateway.sourcefile import read_bytes
from gateway.upstream.channel import open_channel
from gateway.upstream.forwarder import UpstreamForwarder, UpstreamHeaders

if TYPE_CHECKING:
    from gateway.workers import SupervisorLink

log = logging.getLogger("opsgate.server")
AUDIT_FLUSH_TIMEOUT_S = 30.0


@dataclass(slots=True)
class Gateway:
    """A started gateway: where it listens and how to stop it."""

    server: grpc.aio.Server
    channel: grpc.aio.Channel | None  # to the upstream; None when only Envoy's authorizer
    health: health.aio.HealthServicer
    pipeline: Pipeline
    port: int
    host: str
    metrics: MetricsServer
    background: tuple[asyncio.Task[None], ...] = ()
    rest: RestDoor | None = None
    envoy: EnvoyDoor | None = None
    envoy_http: HttpCheckServer | None = None  # Envoy's HTTP check, if configured
    health_port: HealthListener | None = None  # `health.listen`, if configured
    _reloads: set[asyncio.Task[bool]] = field(default_factory=set)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def envoy_http_address(self) -> str | None:
        """Where Envoy's HTTP check listens (its bound port), if it does."""
        return self.envoy_http.address if self.envoy_http is not None else None

    def reload_policies(self) -> None:
        """SIGHUP: reload the enforced policy and any dry-run candidate now."""
        for reloader in self.pipeline.reloaders:
            task = asyncio.create_task(reloader.reload())
            self._reloads.add(task)
            task.add_done_callback(self._reloads.discard)

    async def stop(self, grace: float | None) -> None:
        """Stop taking calls, give in-flight ones `grace` seconds, then close the upstream."""
        await self.health.enter_graceful_shutdown()
        if self.envoy_http is not None:
            self.envoy_http.close()  # Envoy takes its checks to a replica still serving
        server_grace = grace
        if self.envoy is not None and grace:
            # Envoy's access log keeps its streams open: they are cut once the calls Envoy let
            # through have been reported (or the grace is over), and what is left is written
            # marked as not reported.
            waited = await self.envoy.reported(grace)
            server_grace = max(0.0, grace - waited)
        doors = [self.server.stop(server_grace), *([self.rest.stop(grace)] if self.rest else [])]
        await asyncio.gather(*doors)  # the doors drain together
        if self.envoy is not None:
            await self.envoy.stop()
        await self.metrics.stop()
        if self.health_port is not None:
            await self.health_port.stop()  # probes were told NOT_SERVING through the drain
        for task in self.background:
            task.cancel()
        if self.channel is not None:
            await self.channel.close()
        # Every record of every call, the drained ones included, is written before we exit.
        await asyncio.to_thread(self.pipeline.audit.writer.close, AUDIT_FLUSH_TIMEOUT_S)


def server_options(settings: Settings, share_port: bool = False) -> list[tuple[str, object]]:
    return [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_metadata_size", settings.max_metadata_bytes),
        ("grpc.absolute_max_metadata_size", settings.max_metadata_bytes),
        # Refuse to share a port silently with another process already bound to it, unless we
        # are one of `serve --workers N` sharing it on purpose.
        ("grpc.so_reuseport", 1 if share_port else 0),
    ]


def server_credentials(tls: ServerTls) -> grpc.ServerCredentials:
    client_ca = read_bytes(tls.client_ca_file, "tls.client_ca_file") if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(read_bytes(tls.key_file, "tls.key_file"), read_bytes(tls.cert_file, "tls.cert_file"))],
        root_certificates=client_ca,
        require_client_auth=tls.require_client_cert,
    )


async def start_gateway(
    settings: Settings,
    *,
    sink: OutcomeSink | None = None,
    share_port: bool = False,
    workers_dir: Path | None = None,
    workers: WorkerCounts | None = None,
) -> Gateway:
    """Bind the listeners and start serving.

    Neither the upstream nor the key endpoints are waited for: the upstream is connected to
    lazily and keys are fetched in the background, so the gateway starts while either is
    down (calls get UNAVAILABLE until they are back). With `share_port` (a worker of
    `serve --workers N`) every shared port is bound with SO_REUSEPORT; `workers` are the
    supervisor's counts, for health and metrics.
    """
    pipeline = build_pipeline(settings, sink)
    if workers is not None:
        pipeline.registry.register(WorkersCollector(workers))
    channel = forwarder = None
    if settings.upstream is not None:
        channel = open_channel(settings.upstream, settings.max_message_bytes)
        headers = UpstreamHeaders(
            forward_authorization=settings.authentication.forward_authorization,
            identity_header=settings.authentication.identity_header,
        )
        forwarder = UpstreamForwarder(channel, settings.upstream.target, headers)
    server = grpc.aio.server(
        interceptors=[ChainInterceptor(pipeline.runner, forwarder=forwarder)],
        options=server_options(settings, share_port),
    )
    envoy = None
    if settings.envoy is not None:
        envoy = EnvoyDoor.build(settings.envoy, settings.authentication, pipeline, workers_dir)
        server.add_generic_rpc_handlers(envoy.handlers())
        await envoy.start()
    servicer = add_health_service(server, lambda: pipeline.policies.current.etag, workers)
    metrics = MetricsServer(pipeline.registry)
    envoy_http = rest = None
    health_port: HealthListener | None = None
    grpc_bound = False
    try:
        # This process's own port first, the shared ones after, the gRPC listener last: a
        # worker that cannot have its own port (metrics.listen + K) fails before it has taken
        # any connection on a port its siblings share, and none is cut when it exits.
        if settings.metrics is not None:
            await _start_metrics(metrics, settings.metrics.listen)
        rest = await _start_rest(settings, pipeline, forwarder, share_port)
        if envoy is not None and settings.envoy is not None and settings.envoy.http_listen:
            envoy_http = await _start_http_check(envoy, settings.envoy, share_port)
        if settings.health is not None:
            await start_not_ready(servicer)  # its first answer is "not ready", as on `listen`
            health_port = await start_health_listener(settings.health.listen, servicer, share_port)
        port = _bind(server, settings)
        grpc_bound = True
        await start_not_ready(servicer)
        await server.start()
    except BaseException:
        if health_port is not None:
            await health_port.stop()
        if envoy_http is not None:
            envoy_http.close()
        if rest is not None:
            await rest.stop(0)
        if grpc_bound:
            await server.stop(None)
        await metrics.stop()
        if envoy is not None:
            await envoy.stop()
        if channel is not None:
            await channel.close()
        raise
    # Readiness follows at once when the keys are in, or the supervisor's count changes.
    wake = asyncio.Event()
    if workers is not None:
        workers.changed = wake.set
    prefetch = asyncio.create_task(pipeline.authn.prefetch(), name="opsgate-key-prefetch")
    prefetch.add_done_callback(lambda _: wake.set())
    ready = ready_with_workers(lambda: pipeline.authn.ready, workers)
    background = [
        prefetch,
        asyncio.create_task(pipeline.authn.keep_trying(), name="opsgate-key-retry"),
        asyncio.create_task(track_readiness(servicer, ready, wake=wake), name="opsgate-readiness"),
    ]
    if envoy is not None:
        background.append(asyncio.create_task(envoy.expire_overdue(), name="opsgate-envoy-join"))
    if settings.authorization.reload_interval_s > 0:
        background += [
            asyncio.create_task(reloader.watch(), name=f"opsgate-watch-{reloader.path.name}")
            for reloader in pipeline.reloaders
        ]
    host = settings.listen.rpartition(":")[0]
    serving = [f"forwarding to {settings.upstream.target}"] if settings.upstream else []
    if envoy is not None:
        serving.append("Envoy's external authorizer")
    log.info("opsgate listening on %s:%d, %s", host, port, " and ".join(serving))
    gateway = Gateway(
        server,
        channel,
        servicer,
        pipeline,
        port,
        host,
        metrics,
        tuple(background),
        rest,
        envoy,
        envoy_http,
        health_port,
    )
    if gateway.envoy_http_address is not None:
        log.info("Envoy's HTTP check on %s", gateway.envoy_http_address)
    if health_port is not None and settings.health is not None:
        health_host = settings.health.listen.rpartition(":")[0]
        log.info(
            "health port %s:%d: grpc.health.v1.Health only, plaintext",
            health_host,
            health_port.port,
        )
    return gateway


async def _start_rest(
    settings: Settings,
    pipeline: Pipeline,
    forwarder: UpstreamForwarder | None,
    share_port: bool = False,
) -> RestDoor | None:
    """The REST/JSON door, through the same pipeline and forwarder, if configured."""
    if settings.rest is None:
        return None
    if forwarder is None:
        raise ConfigError("<config>", "rest", "needs `upstream`: the REST door forwards calls")
    return await start_rest_door(
        settings.rest,
        pipeline.runner,
        forwarder,
        pipeline.profile,
        ssl_context=server_ssl_context(settings.tls) if settings.tls else None,
        identity_header=settings.authentication.identity_header,
        share_port=share_port,
    )


async def _start_metrics(metrics: MetricsServer, listen: str) -> None:
    try:
        await metrics.start(listen)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(
            "<listen>", "metrics.listen", f"cannot listen on {listen}: {reason}"
        ) from exc


async def _start_http_check(
    door: EnvoyDoor, envoy: EnvoySettings, share_port: bool
) -> HttpCheckServer:
    listen = envoy.http_listen or ""
    try:
        return await start_http_check(door, listen, envoy.max_body_bytes, share_port=share_port)
    except OSError as exc:
        raise ConfigError(
            "<listen>", "envoy.http_listen", f"cannot listen on {listen}: {exc.strerror or exc}"
        ) from exc


def _bind(server: grpc.aio.Server, settings: Settings) -> int:
    try:
        if settings.tls is None:
            port: int = server.add_insecure_port(settings.listen)
        else:
            port = server.add_secure_port(settings.listen, server_credentials(settings.tls))
    except RuntimeError as exc:
        port = 0
        reason = str(exc)
    else:
        reason = "the address is in use or not available"
    if port == 0:
        raise ConfigError("<listen>", "listen", f"cannot listen on {settings.listen}: {reason}")
    return port


async def serve_until_signalled(
    settings: Settings,
    share_port: bool = False,
    workers_dir: Path | None = None,
    supervisor: SupervisorLink | None = None,
) -> int:
    """Run the gateway until SIGTERM/SIGINT, drain in-flight calls, and return the exit code.

    A worker of `serve --workers N` tells its `supervisor` once every door is bound, and
    drains as on SIGTERM if the supervisor goes away.
    """
    # A file-size limit must fail the audit write (EFBIG: audit.on_failure applies), not kill us.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    gateway = await start_gateway(
        settings,
        share_port=share_port,
        workers_dir=workers_dir,
        workers=supervisor.counts if supervisor is not None else None,
    )
    runtime.settle_heap()  # this process is the gateway's alone: its start-up state is for good
    loop.add_signal_handler(signal.SIGHUP, gateway.reload_policies)
    # A worker starts with these blocked (see workers.supervise): one sent while it started is
    # delivered now, and a stop then drains a gateway that has served nothing yet.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
    if supervisor is not None:
        await supervisor.serving(lost=stop.set)
    await stop.wait()
    log.info("shutting down: draining in-flight calls for up to %.1fs", settings.shutdown_grace_s)
    await gateway.stop(settings.shutdown_grace_s)
    if supervisor is not None:
        supervisor.close()
    log.info("stopped")
    return 0
