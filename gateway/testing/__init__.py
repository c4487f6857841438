"""The one harness for tests, hardening and benchmarks: the parts that stand up a world.

tokens: signing keys, JWKS documents, signed tokens · ports: free loopback ports and waiting on
them · loop: LoopThread · idp: a local JWKS/OIDC server · upstream: in-process upstreams ·
processes: the gateway and the upstream as child processes · envoy: a real Envoy child from a
bootstrap dict.
"""
