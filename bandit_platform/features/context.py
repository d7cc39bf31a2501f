"""Validate a decision's context against the experiment's allow-list and build features.

Protected attributes are dropped here, before anything else sees the context: they are never
stored, never evaluated by a rule and never reach a policy.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from bandit_platform.domain.config import (
    CONTEXT_SECTIONS,
    NO_OFFER,
    CompiledExperiment,
    ContextField,
    Offer,
    Variant,
)
from bandit_platform.domain.errors import InvalidInput

ContextValue = float | bool | str | list[str]
FlatContext = dict[str, ContextValue]
#: Features by namespace: `(name, value)` pairs; categorical features are `name=value` at 1.0.
Namespaces = dict[str, list[tuple[str, float]]]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


@dataclass(frozen=True)
class ValidatedContext:
    """A context that passed the allow-list: flat `section.name -> value`."""

    values: FlatContext
    dropped_protected: tuple[str, ...]


def _check_value(spec: ContextField, value: object, field: str) -> ContextValue:
    if spec.type == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput("must be a number", field=field)
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float (JSON allows any size)
            number = math.inf
        if not math.isfinite(number):
            raise InvalidInput("must be a finite number", field=field)
        return number
    if spec.type == "boolean":
        if not isinstance(value, bool):
            raise InvalidInput("must be true or false", field=field)
        return value
    if spec.type == "category":
        if not isinstance(value, str):
            raise InvalidInput("must be a string", field=field)
        if spec.values is not None and value not in spec.values:
            raise InvalidInput(f"must be one of {spec.values}", field=field)
        return value
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput("must be a list of strings", field=field)
    if spec.values is not None:
        for item in value:
            if item not in spec.values:
                raise InvalidInput(f"{item!r} is not one of {spec.values}", field=field)
    return list(value)


def validate_context(
    context: Mapping[str, Mapping[str, object]], experiment: CompiledExperiment
) -> ValidatedContext:
    """Check every context value against the allow-list and flatten it.

    Raises:
        InvalidInput: for an unknown section or field, or a value of the wrong type, with
            `field` set to its path, for example `context.profile.email`.
    """
    values: FlatContext = {}
    dropped: list[str] = []
    for section, fields in context.items():
        if section not in CONTEXT_SECTIONS:
            raise InvalidInput(
                f"unknown context section; expected one of {list(CONTEXT_SECTIONS)}",
                field=f"context.{section}",
            )
        for name, value in fields.items():
            full = f"{section}.{name}"
            if full in experiment.protected:
                dropped.append(full)
                continue
            spec = experiment.context_fields.get(full)
            if spec is None:
                raise InvalidInput(
                    "not in the experiment's context allow-list", field=f"context.{full}"
                )
            values[full] = _check_value(spec, value, f"context.{full}")
    return ValidatedContext(values=values, dropped_protected=tuple(sorted(dropped)))


def _token(text: str) -> str:
    return _UNSAFE.sub("_", text)


def context_namespaces(values: FlatContext) -> Namespaces:
    """Customer features by section namespace, in a stable order."""
    namespaces: Namespaces = {}
    for full in sorted(values):
        section, name = full.split(".", 1)
        bucket = namespaces.setdefault(section, [])
        _append(bucket, _token(name), values[full])
    return namespaces


def offer_namespaces(offer: Offer | None, variant: Variant | None) -> Namespaces:
    """Action features of an offer-variant arm (or of the no-offer arm)."""
    if offer is None:
        return {"offer": [("key=no_offer", 1.0)]}
    offer_features: list[tuple[str, float]] = [
        (f"key={_token(offer.key)}", 1.0),
        (f"product={_token(offer.product)}", 1.0),
    ]
    for name in sorted(offer.features):
        _append(offer_features, _token(name), offer.features[name])
    namespaces: Namespaces = {"offer": offer_features}
    if variant is not None:
        namespaces["variant"] = [
            (f"key={_token(offer.key)}.{_token(variant.key)}", 1.0),
            (f"tone={variant.tone}", 1.0),
        ]
    return namespaces


def _append(bucket: list[tuple[str, float]], name: str, value: ContextValue) -> None:
    if isinstance(value, bool):
        if value:
            bucket.append((name, 1.0))
    elif isinstance(value, int | float):
        bucket.append((name, float(value)))
    elif isinstance(value, str):
        bucket.append((f"{name}={_token(value)}", 1.0))
    else:
        bucket.extend((f"{name}={_token(item)}", 1.0) for item in value)


def arm_namespaces(experiment: CompiledExperiment, arm_key: str) -> Namespaces:
    """Action features of an arm by its key (`offer/variant` or `no_offer`).

    Computed once per compiled configuration and arm; callers must not modify the result.

    Raises:
        KeyError: the arm is not in this configuration.
    """
    cache: dict[str, Namespaces] = experiment.derived.setdefault("arm_namespaces", {})
    found = cache.get(arm_key)
    if found is None:
        found = cache[arm_key] = _arm_namespaces(experiment, arm_key)
    return found


def _arm_namespaces(experiment: CompiledExperiment, arm_key: str) -> Namespaces:
    if arm_key == NO_OFFER:
        return offer_namespaces(None, None)
    offer_key, variant_key = arm_key.split("/", 1)
    offer = experiment.offers[offer_key]
    variant = next((v for v in offer.variants if v.key == variant_key), None)
    if variant is None:
        raise KeyError(arm_key)
    return offer_namespaces(offer, variant)
