"""Turning request context and offers into validated, model-ready features (pure code)."""
