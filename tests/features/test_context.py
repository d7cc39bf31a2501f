"""Tests of context validation (the allow-list) and of the features built from a context.

Protected attributes are dropped at this layer, so these tests also hold invariant 5 for the
customer side: a protected name or value never appears in the validated values nor in any
namespace a policy sees.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bandit_platform.demo import demo_config, demo_config_bytes
from bandit_platform.domain.config import (
    CompiledExperiment,
    Offer,
    Variant,
    decode_config,
    validate_config,
)
from bandit_platform.domain.errors import InvalidInput
from bandit_platform.features.context import (
    IDENTIFIER_COUNTER,
    IdentifierInContext,
    Namespaces,
    context_namespaces,
    identifier_kind,
    offer_namespaces,
    validate_context,
)

DEMO = validate_config(demo_config())

VALID_CONTEXT: dict[str, dict[str, Any]] = {
    "profile": {
        "age_band": "25_34",
        "income_band": "middle",
        "products_held": ["checking", "credit_card"],
        "tenure_years": 3,
    },
    "cash_flow": {"balance": 1250.5, "pays_minimum_only": False, "days_overdrawn_90d": 0},
    "behavior": {"abandoned_application": True, "pages_viewed_7d": []},
    "trigger": {"event": "paycheck_deposit"},
}

PROTECTED: dict[str, dict[str, Any]] = {
    "profile": {
        "gender": "GENDER_SENTINEL",
        "ethnicity": "ETHNICITY_SENTINEL",
        "marital_status": "MARITAL_SENTINEL",
        "religion": "RELIGION_SENTINEL",
        "nationality": "NATIONALITY_SENTINEL",
    }
}
PROTECTED_NAMES = ("gender", "ethnicity", "marital_status", "religion", "nationality")

#: Characters that would break VW's text format inside a feature name.
UNSAFE = re.compile(r"[\s|:]")


def _experiment_with_free_categories() -> CompiledExperiment:
    """The demo experiment plus category fields without a value list (any text allowed)."""
    document = json.loads(demo_config_bytes())
    document["context_fields"] += [
        {"name": "trigger.merchant", "type": "category"},
        {"name": "behavior.search_terms", "type": "categories"},
    ]
    return validate_config(decode_config(json.dumps(document)))


FREE = _experiment_with_free_categories()


def _merged(*contexts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for context in contexts:
        for section, fields in context.items():
            merged.setdefault(section, {}).update(fields)
    return merged


def _feature_names(namespaces: Namespaces) -> list[str]:
    return [name for features in namespaces.values() for name, _ in features]


# --------------------------------------------------------------------------------------------
# The allow-list
# --------------------------------------------------------------------------------------------


def test_valid_context_is_flattened() -> None:
    validated = validate_context(VALID_CONTEXT, DEMO)

    assert validated.values == {
        "profile.age_band": "25_34",
        "profile.income_band": "middle",
        "profile.products_held": ["checking", "credit_card"],
        "profile.tenure_years": 3.0,
        "cash_flow.balance": 1250.5,
        "cash_flow.pays_minimum_only": False,
        "cash_flow.days_overdrawn_90d": 0.0,
        "behavior.abandoned_application": True,
        "behavior.pages_viewed_7d": [],
        "trigger.event": "paycheck_deposit",
    }
    assert validated.dropped_protected == ()
    # integers become floats, so features do not depend on how the client spelled a number
    assert type(validated.values["profile.tenure_years"]) is float


def test_validated_lists_are_copies() -> None:
    products = ["checking"]
    validated = validate_context({"profile": {"products_held": products}}, DEMO)
    products.append("mortgage")

    assert validated.values["profile.products_held"] == ["checking"]


def test_empty_context_is_valid() -> None:
    validated = validate_context({}, DEMO)
    assert validated.values == {}
    assert context_namespaces(validated.values) == {}


INVALID_CONTEXTS: list[tuple[str, dict[str, dict[str, Any]], str, str]] = [
    # (id, context, field named, message fragment)
    ("unknown-section", {"identity": {"email": "a@b.c"}}, "context.identity", "section"),
    ("unknown-field", {"profile": {"email": "a@b.c"}}, "context.profile.email", "allow-list"),
    (
        "field-of-another-section",
        {"profile": {"balance": 10.0}},
        "context.profile.balance",
        "allow-list",
    ),
    ("number-as-text", {"cash_flow": {"balance": "1200"}}, "context.cash_flow.balance", "number"),
    ("number-as-list", {"cash_flow": {"balance": [1.0]}}, "context.cash_flow.balance", "number"),
    ("number-as-null", {"cash_flow": {"balance": None}}, "context.cash_flow.balance", "number"),
    (
        "bool-is-not-a-number",
        {"cash_flow": {"balance": True}},
        "context.cash_flow.balance",
        "number",
    ),
    ("nan", {"cash_flow": {"balance": math.nan}}, "context.cash_flow.balance", "finite"),
    ("inf", {"cash_flow": {"balance": math.inf}}, "context.cash_flow.balance", "finite"),
    ("-inf", {"cash_flow": {"balance": -math.inf}}, "context.cash_flow.balance", "finite"),
    # JSON allows integers of any size; one too large for a float is not a number we can use
    ("huge-integer", {"cash_flow": {"balance": 10**400}}, "context.cash_flow.balance", "finite"),
    (
        "boolean-as-number",
        {"cash_flow": {"pays_minimum_only": 1}},
        "context.cash_flow.pays_minimum_only",
        "true or false",
    ),
    (
        "boolean-as-text",
        {"behavior": {"abandoned_application": "true"}},
        "context.behavior.abandoned_application",
        "true or false",
    ),
    ("category-as-number", {"profile": {"region": 3}}, "context.profile.region", "string"),
    ("category-as-list", {"profile": {"region": ["north"]}}, "context.profile.region", "string"),
    (
        "category-value-not-allowed",
        {"profile": {"region": "atlantis"}},
        "context.profile.region",
        "one of",
    ),
    (
        "category-value-wrong-case",
        {"trigger": {"event": "App_Open"}},
        "context.trigger.event",
        "one of",
    ),
    (
        "categories-as-text",
        {"profile": {"products_held": "checking"}},
        "context.profile.products_held",
        "list of strings",
    ),
    (
        "categories-with-a-number",
        {"profile": {"products_held": ["checking", 1]}},
        "context.profile.products_held",
        "list of strings",
    ),
    (
        "categories-value-not-allowed",
        {"profile": {"products_held": ["checking", "yacht"]}},
        "context.profile.products_held",
        "item 1 is not one of",
    ),
]


@pytest.mark.parametrize(
    ("context", "field", "fragment"),
    [pytest.param(c, f, frag, id=name) for name, c, f, frag in INVALID_CONTEXTS],
)
def test_invalid_context_names_its_field(
    context: dict[str, dict[str, Any]], field: str, fragment: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_context(_merged(VALID_CONTEXT, context), DEMO)

    assert caught.value.field == field
    assert fragment in caught.value.message


@pytest.mark.parametrize(
    "context",
    [
        {"profile": {"region": "jane.doe@example.com"}},
        {"profile": {"products_held": ["checking", "jane.doe@example.com"]}},
        {"cash_flow": {"balance": "jane.doe@example.com"}},
    ],
)
def test_a_value_outside_the_allowed_ones_is_not_echoed(context: dict[str, Any]) -> None:
    """A refused value may be anything, an identifier typed into the wrong field included."""
    with pytest.raises(InvalidInput) as caught:
        validate_context(context, DEMO)
    assert "jane.doe" not in caught.value.message


def test_free_category_accepts_any_text() -> None:
    validated = validate_context(
        {"trigger": {"merchant": "Café | Bar: 24/7"}, "behavior": {"search_terms": ["a b"]}}, FREE
    )
    assert validated.values["trigger.merchant"] == "Café | Bar: 24/7"
    assert validated.values["behavior.search_terms"] == ["a b"]


# --------------------------------------------------------------------------------------------
# Direct identifiers in free text
# --------------------------------------------------------------------------------------------

#: (text, kind): values that carry a direct identifier.
IDENTIFIER_VALUES = [
    ("jane.doe@example.com", "email"),
    ("JANE_DOE+offers@Bank.Example.co.uk", "email"),
    ("write to jane@example.org please", "email"),
    ("+44 7700 900123", "phone"),
    ("+1 (555) 123-4567", "phone"),
    ("07700 900123", "phone"),
    ("(555) 123-4567", "phone"),
    ("555.123.4567", "phone"),
    ("call 0049 30 1234567 after six", "phone"),
    ("GB82 WEST 1234 5698 7654 32", "iban"),
    ("gb82west12345698765432", "iban"),
    ("DE89370400440532013000", "iban"),
    ("NO9386011117947", "iban"),
    ("FR1420041010050500013M02606", "iban"),
    ("4111 1111 1111 1111", "card_number"),
    ("4111-1111-1111-1111", "card_number"),
    ("5500005555555559", "card_number"),
    ("378282246310005", "card_number"),
    ("paid with 6011000990139424 yesterday", "card_number"),
]

#: Free text near an identifier that is not one.
ORDINARY_VALUES = [
    "savings account",
    "travel card 2026",
    "Corner Coffee 0042 London",
    "Café | Bar: 24/7",
    "25_34",
    "2026-11-30",
    "1234567.89",
    "order 12345678",
    "a@b",
    "user at example dot com",
    "GB82 WEST 1234 5698",  # too short for an IBAN, too few digits for a phone
    "4111 1111 1111 1112",  # 16 digits failing Luhn: neither a card nor a phone
]


@pytest.mark.parametrize(("text", "kind"), IDENTIFIER_VALUES)
def test_identifier_kinds_are_recognised(text: str, kind: str) -> None:
    assert identifier_kind(text) == kind


@pytest.mark.parametrize("text", ORDINARY_VALUES)
def test_ordinary_text_is_not_an_identifier(text: str) -> None:
    assert identifier_kind(text) is None


def test_checksums_decide_iban_and_card() -> None:
    # one digit off: the checksum fails, so neither is recognised as what it imitates
    assert identifier_kind("GB82 WEST 1234 5698 7654 33") != "iban"
    assert identifier_kind("4111 1111 1111 1112") != "card_number"


@pytest.mark.parametrize(("text", "kind"), IDENTIFIER_VALUES)
def test_identifier_in_a_free_category_is_refused_without_echo(text: str, kind: str) -> None:
    with pytest.raises(IdentifierInContext) as caught:
        validate_context(_merged(VALID_CONTEXT, {"trigger": {"merchant": text}}), FREE)

    error = caught.value
    assert isinstance(error, InvalidInput)
    assert error.field == "context.trigger.merchant"
    assert error.kind == kind
    assert error.counters == (IDENTIFIER_COUNTER, f"{IDENTIFIER_COUNTER}.{kind}")
    assert text not in error.message
    assert text not in repr(error)
    assert text not in str(error)


@pytest.mark.parametrize(("text", "kind"), IDENTIFIER_VALUES[::3])
def test_identifier_in_a_free_list_is_refused_naming_the_item(text: str, kind: str) -> None:
    with pytest.raises(IdentifierInContext) as caught:
        validate_context({"behavior": {"search_terms": ["loans", text]}}, FREE)

    assert caught.value.field == "context.behavior.search_terms"
    assert caught.value.message.startswith("item 1 ")
    assert caught.value.kind == kind
    assert text not in caught.value.message


def test_ordinary_free_text_is_accepted() -> None:
    validated = validate_context(
        {
            "trigger": {"merchant": ORDINARY_VALUES[2]},
            "behavior": {"search_terms": ORDINARY_VALUES},
        },
        FREE,
    )
    assert validated.values["behavior.search_terms"] == ORDINARY_VALUES


def test_a_protected_attribute_is_dropped_whatever_it_holds() -> None:
    """Protected values are never looked at, not even to refuse them."""
    validated = validate_context({"profile": {"gender": "jane.doe@example.com"}}, FREE)
    assert validated.dropped_protected == ("profile.gender",)
    assert validated.values == {}


def test_an_unknown_field_is_refused_without_echoing_its_value() -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_context({"profile": {"email": "jane.doe@example.com"}}, FREE)
    assert caught.value.field == "context.profile.email"
    assert "jane.doe" not in caught.value.message


def _luhn_complete(digits: str) -> str:
    for check in "0123456789":
        candidate = digits + check
        total = 0
        for position, char in enumerate(reversed(candidate)):
            digit = int(char) * (2 if position % 2 else 1)
            total += digit - 9 if digit > 9 else digit
        if total % 10 == 0:
            return candidate
    raise AssertionError("unreachable")


def _iban(country: str, bban: str) -> str:
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(numeric) % 97:02d}{bban}"


@settings(max_examples=200, deadline=None)
@given(
    digits=st.text(alphabet="0123456789", min_size=12, max_size=18),
    separator=st.sampled_from(["", " ", "-"]),
)
def test_any_luhn_valid_card_number_is_refused(digits: str, separator: str) -> None:
    number = _luhn_complete(digits)
    written = separator.join(number[i : i + 4] for i in range(0, len(number), 4))
    assert identifier_kind(written) == "card_number"


@settings(max_examples=200, deadline=None)
@given(
    country=st.sampled_from(["GB", "DE", "FR", "NL", "ES", "IT", "NO", "BE"]),
    bban=st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=11, max_size=30),
    digits=st.text(alphabet="0123456789", min_size=8, max_size=8),
)
def test_any_checksum_valid_iban_is_refused(country: str, bban: str, digits: str) -> None:
    iban = _iban(country, digits + bban[: 30 - len(digits)])
    assert identifier_kind(iban) == "iban"


@settings(max_examples=200, deadline=None)
@given(address=st.emails())
def test_any_email_address_is_refused(address: str) -> None:
    assert identifier_kind(address) == "email"


# --------------------------------------------------------------------------------------------
# Protected attributes
# --------------------------------------------------------------------------------------------


def test_protected_attributes_are_dropped_and_reported() -> None:
    validated = validate_context(_merged(VALID_CONTEXT, PROTECTED), DEMO)

    assert validated.dropped_protected == tuple(sorted(f"profile.{n}" for n in PROTECTED_NAMES))
    assert validated.values == validate_context(VALID_CONTEXT, DEMO).values
    text = repr(validated.values) + repr(context_namespaces(validated.values))
    for name in PROTECTED_NAMES:
        assert name not in text
    assert "SENTINEL" not in text


@pytest.mark.parametrize("value", [None, 3, ["x"], {"nested": "GENDER_SENTINEL"}, math.nan])
def test_protected_attribute_of_any_type_is_dropped_without_error(value: object) -> None:
    """A protected value is never even type-checked: it is not ours to look at."""
    validated = validate_context({"profile": {"gender": value}}, DEMO)

    assert validated.values == {}
    assert validated.dropped_protected == ("profile.gender",)


@settings(max_examples=200, deadline=None)
@given(
    names=st.lists(st.sampled_from(PROTECTED_NAMES), unique=True),
    value=st.text(min_size=1) | st.floats() | st.booleans(),
)
def test_protected_values_never_reach_features(names: list[str], value: object) -> None:
    context = _merged(VALID_CONTEXT, {"profile": dict.fromkeys(names, value)})

    validated = validate_context(context, DEMO)
    namespaces = context_namespaces(validated.values)

    assert validated.dropped_protected == tuple(sorted(f"profile.{name}" for name in names))
    assert not set(validated.values) & DEMO.protected
    for feature in _feature_names(namespaces):
        assert not any(feature.startswith(name) for name in PROTECTED_NAMES)


# --------------------------------------------------------------------------------------------
# Namespaces
# --------------------------------------------------------------------------------------------


def test_context_namespaces() -> None:
    namespaces = context_namespaces(validate_context(VALID_CONTEXT, DEMO).values)

    assert namespaces == {
        "behavior": [("abandoned_application", 1.0)],
        "cash_flow": [("balance", 1250.5), ("days_overdrawn_90d", 0.0)],
        "profile": [
            ("age_band=25_34", 1.0),
            ("income_band=middle", 1.0),
            ("products_held=checking", 1.0),
            ("products_held=credit_card", 1.0),
            ("tenure_years", 3.0),
        ],
        "trigger": [("event=paycheck_deposit", 1.0)],
    }


def test_context_namespaces_are_stable_under_reordering() -> None:
    values = validate_context(VALID_CONTEXT, DEMO).values
    reordered = dict(reversed(list(values.items())))

    first = context_namespaces(values)
    second = context_namespaces(reordered)

    assert first == second
    assert list(first) == list(second)


@settings(max_examples=300, deadline=None)
@given(
    merchant=st.text(max_size=40),
    terms=st.lists(st.text(max_size=20), max_size=5),
)
def test_context_feature_names_are_sanitised(merchant: str, terms: list[str]) -> None:
    # Text that looks like an identifier is refused (tested below), not sanitised.
    assume(all(identifier_kind(text) is None for text in [merchant, *terms]))
    context: dict[str, dict[str, object]] = {
        "trigger": {"merchant": merchant},
        "behavior": {"search_terms": terms},
    }

    namespaces = context_namespaces(validate_context(context, FREE).values)

    for namespace, features in namespaces.items():
        assert not UNSAFE.search(namespace)
        for name, value in features:
            assert not UNSAFE.search(name), name
            assert math.isfinite(value)


def test_no_offer_namespaces() -> None:
    assert offer_namespaces(None, None) == {"offer": [("key=no_offer", 1.0)]}


def test_offer_namespaces() -> None:
    offer = DEMO.offers["high_yield_savings"]

    paycheck = offer_namespaces(offer, offer.variants[0])
    rate = offer_namespaces(offer, offer.variants[1])

    assert paycheck["offer"] == [
        ("key=high_yield_savings", 1.0),
        ("product=savings", 1.0),
        ("category=deposit", 1.0),
        ("rate", 4.1),
    ]
    # variants of one offer share its offer features and differ in the variant namespace
    assert rate["offer"] == paycheck["offer"]
    assert paycheck["variant"] == [("key=high_yield_savings.paycheck", 1.0), ("tone=warm", 1.0)]
    assert rate["variant"] == [("key=high_yield_savings.rate", 1.0), ("tone=informative", 1.0)]
    assert offer_namespaces(offer, None).keys() == {"offer"}


def test_offer_namespaces_are_stable() -> None:
    for offer in DEMO.offers.values():
        reordered = Offer(
            key=offer.key,
            product=offer.product,
            name=offer.name,
            features=dict(reversed(list(offer.features.items()))),
            variants=offer.variants,
        )
        for variant in offer.variants:
            assert offer_namespaces(offer, variant) == offer_namespaces(reordered, variant)


@settings(max_examples=300, deadline=None)
@given(
    features=st.dictionaries(
        st.sampled_from(["rate", "apr", "annual-fee", "category", "credit_product", "0tier"]),
        st.text(max_size=30) | st.booleans() | st.floats(allow_nan=False, allow_infinity=False),
        max_size=6,
    ),
    tone=st.sampled_from(["neutral", "warm", "urgent", "informative", "playful"]),
)
def test_offer_feature_names_are_sanitised(features: dict[str, Any], tone: Any) -> None:
    offer = Offer(
        key="gold-card_2",
        product="credit_card",
        name="Gold card",
        features=features,
        variants=[Variant(key="v-1", tone=tone)],
    )

    namespaces = offer_namespaces(offer, offer.variants[0])

    for namespace, entries in namespaces.items():
        assert not UNSAFE.search(namespace)
        for name, _ in entries:
            assert not UNSAFE.search(name), name
