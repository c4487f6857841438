"""`opsgate policy ...`: check, explain, test and diff policy files before they go live."""
