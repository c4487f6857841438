"""The Envoy door: opsgate as Envoy's external authorizer and its access-log receiver."""
