"""`python -m gateway`: the same entry point as the `opsgate` console script."""

from __future__ import annotations

from gateway.cli import main

raise SystemExit(main())
