"""Unit tests for the in-memory reference Operations upstream."""
