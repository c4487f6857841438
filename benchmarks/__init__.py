"""opsgate benchmarks: `python -m benchmarks [--quick | --smoke]` writes benchmarks/REPORT.md.

End-to-end rows (direct, nginx, a minimal Python forwarder, opsgate warm and cold) driven by
h2load and a Python generator, Envoy as the front end (a hop, jwt_authn + rbac, minimal gRPC
and HTTP ext_authz servers, opsgate as its authorizer: envoyrows.py), library mode,
`serve --workers` scale, memory under many tokens, held long calls, and in-process
micro-benchmarks (token verification, policy decisions and loads, cedarpy and casbin on an
equivalent policy). See harness.py for how a run is put together and modes.py for how long
each part runs.
"""
