"""How long and how hard each part of the harness runs: --smoke, --quick and the full mode."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mode:
    name: str
    concurrencies: tuple[int, ...]
    repeats: int
    h2load_seconds: float  # one measured h2load run
    warmup_seconds: float  # one h2load warm-up per row before the first repeat
    # Python-generator rows make a fixed number of calls (every cold call needs its own token).
    pygen_calls: dict[int, int]
    pygen_warmup: int
    check_calls: int  # check-client calls per row, before and after the repeats
    e2e_policy_bindings: int  # the realistic policy the gateway decides with
    micro_sizes: tuple[int, ...]
    micro_target_s: float  # time per micro measurement
    micro_tokens: int  # tokens per algorithm per repeat
    library_concurrency: int
    library_seconds: float
    scale_concurrency: int
    scale_seconds: float
    memory_tokens: int
    memory_principals: int
    held_calls: int
    held_unary_calls: int
    held_concurrency: int
    profile_seconds: float
    budget_s: float  # the harness skips what would run past this, and says so
    h2load_rows: bool = True
    extras: bool = True  # library mode, scale, memory, long calls


SMOKE = Mode(
    name="smoke",
    concurrencies=(4,),
    repeats=1,
    h2load_seconds=1.0,
    warmup_seconds=0.3,
    pygen_calls={4: 200},
    pygen_warmup=20,
    check_calls=5,
    e2e_policy_bindings=100,
    micro_sizes=(100,),
    micro_target_s=0.02,
    micro_tokens=0,
    library_concurrency=4,
    library_seconds=1.0,
    scale_concurrency=16,
    scale_seconds=1.0,
    memory_tokens=0,
    memory_principals=0,
    held_calls=0,
    held_unary_calls=0,
    held_concurrency=4,
    profile_seconds=0.0,
    budget_s=25.0,
    h2load_rows=False,
    extras=False,
)

QUICK = Mode(
    name="quick",
    concurrencies=(1, 16),
    repeats=3,
    h2load_seconds=1.5,
    warmup_seconds=0.5,
    pygen_calls={1: 600, 16: 1500},
    pygen_warmup=100,
    check_calls=20,
    e2e_policy_bindings=10_000,
    micro_sizes=(100, 10_000),
    micro_target_s=0.05,
    micro_tokens=500,
    library_concurrency=16,
    library_seconds=1.5,
    scale_concurrency=64,
    scale_seconds=1.5,
    memory_tokens=20_000,
    memory_principals=1_000,
    held_calls=200,
    held_unary_calls=2500,
    held_concurrency=16,
    profile_seconds=3.0,
    budget_s=175.0,
)

# A million distinct tokens take the gateway about 10-11 minutes on 2 cores (~650 µs of CPU each),
# so everything else gets about 7, and the envoy phase (issue 17) about 5.5 more: the memory phase
# runs last and uses what is left.
FULL = Mode(
    name="full",
    concurrencies=(1, 16, 64),
    repeats=3,
    h2load_seconds=3.0,
    warmup_seconds=1.0,
    pygen_calls={1: 1500, 16: 4000, 64: 4000},
    pygen_warmup=200,
    check_calls=50,
    e2e_policy_bindings=10_000,
    micro_sizes=(100, 10_000, 100_000),
    micro_target_s=0.1,
    micro_tokens=1000,
    library_concurrency=16,
    library_seconds=3.0,
    scale_concurrency=64,
    scale_seconds=3.0,
    memory_tokens=1_000_000,
    memory_principals=1_000,
    held_calls=1000,
    held_unary_calls=3000,
    held_concurrency=16,
    profile_seconds=5.0,
    budget_s=25.0 * 60.0,
)

MODES = {mode.name: mode for mode in (SMOKE, QUICK, FULL)}
