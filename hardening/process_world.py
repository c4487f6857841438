"""One `opsgate serve` process on a given policy, with a controlled in-process upstream and JWKS."""

from __future__ import annotations

import time
from typing import Any

from gateway.reference_upstream.calls import CallRecord
from gateway.reference_upstream.seed import DONE_OPERATION
from gateway.testing.idp import LocalIdp
from gateway.testing.loop import LoopThread
from gateway.testing.processes import ServerProcess, gateway_process
from gateway.testing.tokens import claims
from gateway.testing.upstream import ControlledUpstream, start_controlled_upstream
from hardening.doors import Answer, GrpcDoor, RestDoor
from hardening.env import AUDIENCE, Keys, Workdir, gateway_config, mint, wait_until
from hardening.ledger import read_audit

ALICE = {"email": "alice@acme.example"}


class ProcessWorld:
    """A gateway process that can be killed and started again on the same config; its
    upstream records every call's metadata and can be made slow."""

    def __init__(
        self,
        workdir: Workdir,
        loop: LoopThread,
        keys: Keys,
        jwks: LocalIdp,
        policy_text: str,
        more_issuers: list[dict[str, Any]] | None = None,
    ) -> None:
        self.loop = loop
        self.keys = keys
        self.upstream: ControlledUpstream = loop.run(start_controlled_upstream(0))
        self.audit_file = workdir.path / "audit.log"
        self.config = gateway_config(
            workdir,
            upstream=self.upstream.address,
            jwks_url=jwks.jwks_url,
            policy=workdir.write("policy.yaml", policy_text),
            audit_file=self.audit_file,
            more_issuers=more_issuers,
            audit_file_settings={"max_bytes": 64 * 1024 * 1024},
        )
        self.process: ServerProcess | None = None
        self.grpc: GrpcDoor | None = None
        self.rest: RestDoor | None = None
        self.restarts = 0
        self.calls = 0
        self._tokens: dict[str, str] = {}
        self.start()

    def start(self) -> None:
        self.process = gateway_process(self.config)
        self.grpc = GrpcDoor(self.process.address)
        rest = self.process.rest_address
        self.rest = RestDoor(rest) if rest else None
        if not wait_until(lambda: self.door("grpc").healthy(timeout=1), 15):
            raise RuntimeError("the gateway process never became ready")

    def restart(self) -> None:
        """SIGKILL (a process stuck in a regex does not drain) and start it again."""
        if self.process is not None:
            self.process.kill()
        if self.grpc is not None:
            self.grpc.close()
        self.restarts += 1
        self.start()

    def close(self) -> int | None:
        code = self.process.stop(30) if self.process is not None else None
        if self.grpc is not None:
            self.grpc.close()
        self.loop.run(self.upstream.stop())
        return code

    def doors(self) -> list[str]:
        return ["grpc", "rest"] if self.rest is not None else ["grpc"]

    def door(self, name: str) -> Any:
        door = self.grpc if name == "grpc" else self.rest
        assert door is not None
        return door

    def token(self, who: dict[str, Any]) -> str:
        """A token from the world's issuer for these claims (a None value drops a claim)."""
        key = repr(sorted(who.items()))
        if key not in self._tokens:
            self._tokens[key] = mint(self.keys.primary, **who)
        return self._tokens[key]

    def token_from(self, issuer: str, who: dict[str, Any]) -> str:
        return self.keys.primary.sign(claims(issuer, AUDIENCE, **who))

    def call(self, door: str, name: str, token: str | None, **kw: Any) -> Answer:
        self.calls += 1
        answer: Answer = self.door(door).operation("get", name, token, **kw)
        return answer

    def known_good(self, timeout: float) -> Answer:
        return self.call("grpc", DONE_OPERATION, self.token(ALICE), timeout=timeout)

    def reached(self, name: str) -> list[CallRecord]:
        """The upstream's records of calls for `name` (names are unique per call)."""
        return [r for r in self.upstream.call_log.snapshot() if r.name == name]

    def records_for(self, names: set[str], timeout: float = 10) -> dict[str, list[dict[str, Any]]]:
        """The audit records of these resource names, once each has one (or `timeout` passes)."""
        found: dict[str, list[dict[str, Any]]] = {}

        def complete() -> bool:
            found.clear()
            records, _ = read_audit(self.audit_file) if self.audit_file.exists() else ([], 0)
            for record in records:
                name = record.get("protoPayload", {}).get("resourceName")
                if name in names:
                    found.setdefault(name, []).append(record)
            return len(found) == len(names)

        wait_until(complete, timeout, 0.2)
        return found


def unique(prefix: str, serial: int, salt: int) -> str:
    return f"{prefix}/locations/us-central1/operations/{serial}-{salt:06d}"


def elapsed_ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
