"""Health, logs and (later) metrics: what operators watch the gateway through."""
