"""Tests of the hardening suite (python -m hardening): what the gateway survives."""
