"""The jax backend package."""
