"""Example services built only on sight-core's public API (not installed with the library)."""
