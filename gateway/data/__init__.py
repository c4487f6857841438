"""Data files shipped with opsgate."""
