"""The README's REST client example, run as written in a fresh Python process against the
quickstart's world (reference upstream, example policy, bob's token) with the REST door on."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from gateway.reference_upstream.seed import ACME_PROD_US, DONE_OPERATION
from gateway.testing.loop import LoopThread
from gateway.testing.processes import child_env
from tests.support.policy_cases import BOB
from tests.support.stack import EXAMPLE_POLICY, Identity, running_stack

README = Path(__file__).resolve().parents[2] / "README.md"
README_ENDPOINT = "http://127.0.0.1:8081"
_PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY")


def rest_example() -> str:
    """The Python heredoc of the REST/JSON section that uses google-api-core's REST client."""
    section = README.read_text().split("\n## REST/JSON\n", 1)[1].split("\n## ", 1)[0]
    scripts = re.findall(r"<<'EOF'\n(.*?)\nEOF\n", section, flags=re.DOTALL)
    (script,) = [text for text in scripts if "AbstractOperationsClient" in text]
    assert "rest: {listen: 127.0.0.1:8081}" in section  # the step the example starts from
    return script


def test_the_readme_rest_client_example_runs_in_a_fresh_process(
    loop: LoopThread, identity: Identity, tmp_path: Path
) -> None:
    script = rest_example()
    assert README_ENDPOINT in script
    (tmp_path / "token").write_text(identity.token(**BOB.claims()))
    with running_stack(
        loop, identity, policy=EXAMPLE_POLICY, extra_yaml="rest: {listen: 127.0.0.1:0}\n"
    ) as stack:
        assert stack.gateway.rest is not None
        endpoint = f"http://{stack.gateway.rest.address}"
        env = {k: v for k, v in child_env().items() if k not in _PROXY_VARIABLES}
        done = subprocess.run(
            [sys.executable, "-c", script.replace(README_ENDPOINT, endpoint)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        expected = [op.name for op in stack.direct().list_operations(ACME_PROD_US, "") if op.name]
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == expected
    assert f"{DONE_OPERATION} done type.googleapis.com/google.protobuf.Struct" in lines
