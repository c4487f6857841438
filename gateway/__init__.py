"""opsgate: an IAM-enforcing gRPC gateway for google.longrunning.Operations services."""

from __future__ import annotations

__version__ = "0.1.0"
