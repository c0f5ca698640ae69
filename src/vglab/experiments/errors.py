"""The one exception the experiments layer raises for a spec a user can fix (apart from the
spec's checks, so the CLI can catch it without importing them, and JAX with them)."""


class SpecError(ValueError):
    """An experiment spec that cannot be used; the message names the key and what to write."""
