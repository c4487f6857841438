"""settle_heap: what `opsgate serve` does to the garbage collector once it has started."""

from __future__ import annotations

import json
import subprocess
import sys

from gateway.runtime import GC_THRESHOLDS

PROBE = """
import gc, json
from gateway import runtime
before = gc.get_freeze_count()
runtime.settle_heap()
print(json.dumps({"before": before, "after": gc.get_freeze_count(),
                  "thresholds": gc.get_threshold(), "enabled": gc.isenabled()}))
"""


def test_settle_heap_freezes_the_start_up_heap_and_collects_less_often() -> None:
    # In a child: freezing this test process would change the rest of the suite.
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    state = json.loads(done.stdout)
    assert state["before"] == 0
    assert state["after"] > 1000  # the interpreter and gateway modules, now out of sight
    assert tuple(state["thresholds"]) == GC_THRESHOLDS
    assert state["enabled"]  # collecting less often, never not at all
