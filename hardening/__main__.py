"""`python -m hardening [--short] [--seed N] [--out DIR]`: run the suite, write the report."""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

# gRPC's C core logs refused metadata and the like at ERROR on stderr; the report says it all.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hardening", description="What the gateway survives: attacks and faults."
    )
    parser.add_argument("--short", action="store_true", help="the CI size (under 2 minutes)")
    parser.add_argument("--seed", type=int, help="hypothesis and load seed (default: random)")
    parser.add_argument("--out", type=Path, default=HERE, help="where to write the report")
    args = parser.parse_args(argv)

    from hardening.report import write
    from hardening.suite import Plan, run_suite

    seed = args.seed if args.seed is not None else random.randrange(1, 1_000_000)
    plan = Plan.short() if args.short else Plan.full()
    print(f"hardening: {plan.mode} run, seed {seed}", file=sys.stderr)
    results = run_suite(plan, seed)
    md, js = write(results, args.out)
    t = results["totals"]
    print(
        f"hardening: {'PASSED' if results['passed'] else 'FAILED'} in {results['seconds']} s: "
        f"{t['cases_tried']} cases, {t['calls_made']} calls, faults survived "
        f"{t['faults_survived']}/{t['faults_injected']}, records written {t['records_written']}, "
        f"lost {t['records_lost']}, wrongly allowed {t['wrongly_allowed']}, unhandled "
        f"{t['unhandled_exceptions']}, known bugs reproducing: "
        f"{', '.join(t['known_bugs_reproduced']) or 'none'}\n  {md}\n  {js}",
        file=sys.stderr,
    )
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
