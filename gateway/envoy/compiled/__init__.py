"""The policy compiled into Envoy filters: jwt_authn, field extraction, RBAC DENY and ALLOW."""
