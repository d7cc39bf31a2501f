"""Validate a decision's context against the experiment's allow-list and build features.

Protected attributes are dropped here, before anything else sees the context: they are never
stored, never evaluated by a rule and never reach a policy.

Free-text values (a `category` or `categories` field without a fixed `values` list) are also
checked for direct identifiers: text that looks like an email address, a phone number, an
IBAN (valid mod-97 checksum) or a payment card number (13-19 digits, valid Luhn checksum) is
refused with `IdentifierInContext`, which names the field and the kind, never the value. Only
strings are looked at, and cheap tests come first (no `@` and fewer than seven digits: done),
so a context of numbers, booleans and fixed categories costs nothing more.
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

#: The kinds of direct identifier a free-text context value is checked for, as messages say.
IDENTIFIER_KINDS: dict[str, str] = {
    "email": "an email address",
    "phone": "a phone number",
    "iban": "an IBAN",
    "card_number": "a payment card number",
}
#: Counter of decisions refused for an identifier in their context; one per kind is kept as
#: `<counter>.<kind>` too.
IDENTIFIER_COUNTER = "decisions.identifier_refused"

#: A local part (any character an address may carry unquoted), `@`, a dotted domain.
_EMAIL = re.compile(
    r"[^\s@<>()\[\],;:\"]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z][A-Za-z0-9\-]+"
)
#: Country code, check digits, then the account part, written compact or in groups of four.
_IBAN = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]{4}){2,7}(?: ?[A-Za-z0-9]{1,4})?"
    r"(?![A-Za-z0-9])"
)
#: 13 to 19 digits, each optionally separated by one space or dash.
_CARD = re.compile(r"(?<!\d)\d(?:[ \-]?\d){12,18}(?!\d)")
#: A run of digits with the separators phone numbers are written with.
_PHONE = re.compile(r"(?<![\w+])\+?[(\d][\d \-.()]*\d(?!\w)")
_DECIMAL = re.compile(r"\d+\.\d+")


class IdentifierInContext(InvalidInput):
    """A context value looks like a direct identifier. The message names the field and the
    kind of identifier, never the value."""

    def __init__(self, kind: str, *, field: str, item: int | None = None) -> None:
        where = "" if item is None else f"item {item} "
        super().__init__(
            f"{where}looks like {IDENTIFIER_KINDS[kind]}; direct identifiers may not be sent "
            "in a context",
            field=field,
        )
        self.kind = kind

    @property
    def counters(self) -> tuple[str, str]:
        """The counters a refusal adds one to: all refusals, and this kind's."""
        return IDENTIFIER_COUNTER, f"{IDENTIFIER_COUNTER}.{self.kind}"


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char)  # `\d` matched it: a decimal digit of some script
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _iban_valid(text: str) -> bool:
    compact = text.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _phone_like(run: str) -> bool:
    digits = sum(c.isdigit() for c in run)
    if run.startswith("+"):
        return 7 <= digits <= 15
    # Nine or more digits without a leading `+`: a national number; a decimal is not one.
    return 9 <= digits <= 15 and _DECIMAL.fullmatch(run) is None


def identifier_kind(text: str) -> str | None:
    """The kind of direct identifier `text` contains (a key of `IDENTIFIER_KINDS`), or None.

    Looks for an email address, an IBAN with a valid checksum, a card number with a valid Luhn
    checksum, and a phone number (7-15 digits after a `+`, or 9-15 without), in that order.
    """
    if len(text) < 6:
        return None
    if "@" in text and _EMAIL.search(text) is not None:
        return "email"
    # Every other kind has at least seven digits (a phone number after `+`, the fewest).
    if sum(map(str.isdigit, text)) < 7:
        return None
    for match in _IBAN.finditer(text):
        if _iban_valid(match.group()):
            return "iban"
    for match in _CARD.finditer(text):
        digits = match.group().replace(" ", "").replace("-", "")
        if _luhn(digits):
            return "card_number"
    for match in _PHONE.finditer(text):
        if _phone_like(match.group()):
            return "phone"
    return None


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
        if spec.values is None:
            kind = identifier_kind(value)
            if kind is not None:
                raise IdentifierInContext(kind, field=field)
        elif value not in spec.values:
            raise InvalidInput(f"must be one of {spec.values}", field=field)
        return value
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput("must be a list of strings", field=field)
    # Messages name an item by its position: a value that is not allowed may be anything.
    if spec.values is None:
        for index, item in enumerate(value):
            kind = identifier_kind(item)
            if kind is not None:
                raise IdentifierInContext(kind, field=field, item=index)
    else:
        for index, item in enumerate(value):
            if item not in spec.values:
                raise InvalidInput(f"item {index} is not one of {spec.values}", field=field)
    return list(value)


def validate_context(
    context: Mapping[str, Mapping[str, object]], experiment: CompiledExperiment
) -> ValidatedContext:
    """Check every context value against the allow-list and flatten it.

    Raises:
        InvalidInput: for an unknown section or field, or a value of the wrong type, with
            `field` set to its path, for example `context.profile.email`.
        IdentifierInContext: (an `InvalidInput`) free text that looks like a direct
            identifier; its message never contains the value.
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
