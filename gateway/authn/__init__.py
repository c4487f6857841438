"""Authentication: bearer token in, verified Principal out (JWTs, Google tokens, introspection)."""
