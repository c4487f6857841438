"""The door-neutral stages (audit, authn, ratelimit, route, authz) and the runner that runs them."""
