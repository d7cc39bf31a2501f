"""The demo experiment `banking-offers-demo`, shipped as a JSON file beside this module."""

from __future__ import annotations

from importlib import resources

from bandit_platform.domain.config import ExperimentConfig, decode_config

DEMO_EXPERIMENT_KEY = "banking-offers-demo"


def demo_config_bytes() -> bytes:
    """The demo experiment's configuration document."""
    return (resources.files(__package__) / "banking-offers-demo.json").read_bytes()


def demo_config() -> ExperimentConfig:
    """The demo experiment's configuration, decoded."""
    return decode_config(demo_config_bytes())
