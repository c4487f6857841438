"""Built-in service profiles (YAML)."""
