"""Policies shipped with opsgate: the example the demo runs with."""
