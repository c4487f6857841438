"""A ConfigMap update, as the kubelet writes it into a directory mount, hot-reloads the policy.

The kubelet never rewrites a mounted file: it writes the new ConfigMap into a fresh timestamped
directory and atomically renames the `..data` symlink to point at it; `policy.yaml` is itself a
symlink to `..data/policy.yaml`. This is why deploy/ mounts the ConfigMap as a directory (a
subPath mount pins the old file forever), and this test checks the gateway notices the swap.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from gateway.authorizer import PolicyHolder
from gateway.policy.loader import load_policy
from gateway.policy_reload import PolicyReloader
from tests.deploy.kustomize_lite import find
from tests.deploy.renders import CONFIG_MAP, render

EXTRA_BINDING = """
  - resource: projects/another-project
    bindings:
      - role: roles/contactcenterinsights.viewer
        members: [user:new-reader@example.com]
"""


def _kubelet_write(mount: Path, files: dict[str, str], version: int) -> None:
    """What the kubelet's atomic writer does on every ConfigMap update."""
    payload = mount / f"..2030_01_01_00_00_0{version}.000000000"
    payload.mkdir()
    for name, text in files.items():
        (payload / name).write_text(text)
    (mount / "..data_tmp").symlink_to(payload.name)
    os.replace(mount / "..data_tmp", mount / "..data")
    for name in files:
        if not (mount / name).is_symlink():
            (mount / name).symlink_to(Path("..data") / name)


def test_a_configmap_update_is_picked_up_without_a_restart(tmp_path: Path) -> None:
    """The reloader sees the symlink swap within its interval and swaps the new policy in."""
    files = dict(find(render("base"), "ConfigMap", CONFIG_MAP)["data"])
    _kubelet_write(tmp_path, files, version=1)
    path = tmp_path / "policy.yaml"
    holder = PolicyHolder(load_policy(path))
    first = holder.current.etag
    reloader = PolicyReloader(holder, path, load_policy, interval_s=0.05)

    async def scenario() -> None:
        watcher = asyncio.create_task(reloader.watch())
        try:
            _kubelet_write(
                tmp_path, files | {"policy.yaml": files["policy.yaml"] + EXTRA_BINDING}, 2
            )
            for _ in range(100):
                if reloader.reloads:
                    break
                await asyncio.sleep(0.02)
        finally:
            watcher.cancel()

    asyncio.run(scenario())
    assert reloader.reloads == 1
    assert holder.current.etag != first
