"""`python -m benchmarks [--quick | --smoke] [--only PHASE] [--out DIR]`."""

from __future__ import annotations

import os
import sys

# gRPC's C core logs connection chatter at INFO; set before grpc is first imported.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from benchmarks.harness import main

if __name__ == "__main__":
    sys.exit(main())
