"""Starts and stops the REST/JSON door: an aiohttp server on the gateway's own event loop."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from dataclasses import dataclass

from aiohttp import web

from gateway.errors import ConfigError
from gateway.headers import DEFAULT_IDENTITY_HEADER, GatewayHeaders
from gateway.profile import ServiceProfile
from gateway.rest.anyjson import AnyRenderer
from gateway.rest.anytypes import (
    TypeSourceError,
    import_service_types,
    import_type_modules,
    type_pool,
)
from gateway.rest.door import RestHandler
from gateway.rest.logfilter import install_request_error_filter
from gateway.rest.routes import RouteTable
from gateway.rest.settings import RestSettings
from gateway.stages.chain import Runner
from gateway.upstream.forwarder import UpstreamForwarder

log = logging.getLogger("opsgate.rest")
CLEANUP_TIMEOUT_S = 1.0  # after our own drain nothing is in flight; this only bounds cleanup


@dataclass(slots=True)
class RestDoor:
    """A started REST door: where it listens and how to stop it."""

    runner: web.AppRunner
    handler: RestHandler
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking requests, give in-flight calls `grace` seconds, then cancel the rest.

        Stop the door before the gateway (whose stop closes the upstream channel and flushes
        the audit trail), so every REST call is forwarded and recorded like a gRPC one.
        Cancelled calls are recorded CANCELLED, as gRPC's server.stop(grace) does.
        """
        self.handler.closing = True  # requests on kept-alive connections get 503 from now on
        for site in list(self.runner.sites):
            await site.stop()
        pending = set(self.handler.inflight)
        if pending and grace:
            _, pending = await asyncio.wait(pending, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=CLEANUP_TIMEOUT_S)
        await self.runner.cleanup()


async def start_rest_door(
    settings: RestSettings,
    pipeline_runner: Runner,
    forwarder: UpstreamForwarder,
    profile: ServiceProfile,
    *,
    ssl_context: ssl.SSLContext | None = None,
    identity_header: str | None = DEFAULT_IDENTITY_HEADER,
    share_port: bool = False,
) -> RestDoor:
    """Serve `profile`'s HTTP rules on settings.listen, each call run by `pipeline_runner`
    and, once let through, relayed by `forwarder` (the gRPC door's very own).
    `identity_header` is the one the gateway sends upstream: no caller may send it.
    With `share_port` (a worker of `serve --workers N`) the port is bound with SO_REUSEPORT,
    beside the other workers; without it, a port another process holds is an error."""
    install_request_error_filter()
    routes = RouteTable.from_profile(profile)
    if not routes.routes:
        log.warning("the service profile has no http rules: every REST request will be 404")
    handler = RestHandler(
        routes,
        pipeline_runner,
        forwarder,
        GatewayHeaders(identity_header),
        any_renderer(settings, profile.service),
    )
    app = web.Application(client_max_size=settings.max_body_bytes)
    app.router.add_route("*", "/{path:.*}", handler.handle)
    runner = web.AppRunner(
        app,
        access_log=None,  # the audit trail is the record of calls; operational logs: opsgate.rest
        handler_cancellation=True,  # a client that disconnects cancels its call
        max_field_size=settings.max_header_bytes,
        shutdown_timeout=CLEANUP_TIMEOUT_S,
    )
    await runner.setup()
    host, _, port = settings.listen.rpartition(":")
    bind_host = host.strip("[]")
    try:
        site = web.TCPSite(
            runner, bind_host, int(port), ssl_context=ssl_context, reuse_port=share_port
        )
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        # asyncio's own message repeats the address: the system's words for errno suffice.
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        problem = f"cannot listen on {settings.listen}: {reason}"
        raise ConfigError("<rest.listen>", "rest.listen", problem) from exc
    bound = runner.addresses[0][1]
    log.info("opsgate REST/JSON door listening on %s:%d", host, bound)
    return RestDoor(runner, handler, host, bound)


def any_renderer(settings: RestSettings, service: str) -> AnyRenderer:
    """Renders Any fields with the service's client library's types (where installed), the
    configured modules' and the descriptor sets'. load_settings has checked the last two; a
    file changed since is still a ConfigError, here."""
    found = import_service_types(service)
    if found:
        log.info("REST answers render %s types from %s", service, ", ".join(found))
    try:
        import_type_modules(settings.type_modules)
    except TypeSourceError as exc:
        raise ConfigError("<config>", "rest.type_modules", str(exc)) from exc
    try:
        return AnyRenderer(type_pool(settings.descriptor_sets))
    except TypeSourceError as exc:
        raise ConfigError("<config>", "rest.descriptor_sets", str(exc)) from exc
