"""Helpers shipped for tests and demos: signing keys, JWKS documents and real signed tokens."""
