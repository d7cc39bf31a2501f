"""Tests of the experiment configuration schema: structure (msgspec) and meaning (validation).

Every invalid configuration must raise `InvalidInput` naming the exact JSON path of the problem
(invariant 7), so the table below checks the `field` of each error, not just that one is raised.
"""

from __future__ import annotations

import copy
import json
import math
import typing
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from bandit_platform.demo import demo_config, demo_config_bytes
from bandit_platform.domain.config import (
    MAX_ARMS,
    MAX_OFFERS,
    NO_OFFER,
    RND,
    Bagging,
    Cover,
    EpsilonDecay,
    EpsilonGreedy,
    ExperimentConfig,
    ExploreFirst,
    Explorer,
    Softmax,
    SquareCB,
    SynthCover,
    config_from_builtins,
    config_to_builtins,
    decode_config,
    identifier_field_kind,
    validate_config,
)
from bandit_platform.domain.errors import InvalidInput

Document = dict[str, Any]
Mutation = Callable[[Document], None]

_DEMO: Document = json.loads(demo_config_bytes())


def demo_document() -> Document:
    """A fresh, mutable copy of the demo configuration document."""
    return copy.deepcopy(_DEMO)


def _error(document: Document | str) -> InvalidInput:
    """The error of decoding and validating a document (which must be invalid)."""
    text = document if isinstance(document, str) else json.dumps(document)
    with pytest.raises(InvalidInput) as caught:
        validate_config(decode_config(text))
    return caught.value


def _offer(key: str, variants: int = 1) -> Document:
    return {
        "key": key,
        "product": "savings",
        "name": key,
        "variants": [{"key": f"v{index}"} for index in range(variants)],
    }


# --------------------------------------------------------------------------------------------
# The demo configuration
# --------------------------------------------------------------------------------------------


def test_demo_config_validates() -> None:
    config = demo_config()
    compiled = validate_config(config)

    assert compiled.config is config
    assert list(compiled.offers) == [offer.key for offer in config.offers]
    assert set(compiled.eligibility) == set(compiled.offers)
    assert len(compiled.segments) == len(config.segments)
    assert len(compiled.incumbent_rules) == len(config.ab_arm.rules)
    assert compiled.protected == frozenset(config.protected_attributes)
    assert not compiled.protected & set(compiled.context_fields)
    # six offers with two variants each, then the no-offer arm last
    assert len(compiled.arms) == 13
    assert compiled.arms[-1].key == NO_OFFER
    assert compiled.arms[0].key == "high_yield_savings/paycheck"


def test_config_round_trips_through_builtins() -> None:
    config = demo_config()
    stored = config_to_builtins(config)

    assert config_from_builtins(stored) == config
    assert decode_config(json.dumps(stored)) == config


# --------------------------------------------------------------------------------------------
# Invalid configurations: each names its field
# --------------------------------------------------------------------------------------------


def _set(path: str, value: object) -> Mutation:
    """A mutation that sets the value at a dotted path (list indices as numbers)."""

    def mutate(document: Document) -> None:
        *parents, last = path.split(".")
        target: Any = document
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return mutate


def _both(*mutations: Mutation) -> Mutation:
    def mutate(document: Document) -> None:
        for mutation in mutations:
            mutation(document)

    return mutate


def _duplicate_offer_key(document: Document) -> None:
    document["offers"][1]["key"] = document["offers"][0]["key"]


def _add_protected_context_field(document: Document) -> None:
    document["context_fields"].append({"name": "profile.gender", "type": "category"})


def _many_offers(count: int, variants: int) -> Mutation:
    def mutate(document: Document) -> None:
        document["offers"] = [_offer(f"offer_{index}", variants) for index in range(count)]
        document["ab_arm"] = {"kind": "uniform"}
        document["fallback_offer"] = None
        document["probability_floor"] = 0.0

    return mutate


def _too_many_variants(document: Document) -> None:
    document["offers"][0]["variants"] = [{"key": f"v{index}"} for index in range(11)]


def _duplicate_variant(document: Document) -> None:
    variants = document["offers"][2]["variants"]
    variants[1]["key"] = variants[0]["key"]


def _duplicate_segment(document: Document) -> None:
    document["segments"][3]["key"] = document["segments"][0]["key"]


def _duplicate_context_field(document: Document) -> None:
    document["context_fields"].append({"name": "cash_flow.balance", "type": "number"})


DEMO_FIELDS = len(_DEMO["context_fields"])

INVALID: list[tuple[str, Mutation, str, str]] = [
    # (id, mutation of the demo document, expected field, fragment of the message)
    (
        "traffic-below-100",
        _set("traffic", {"holdout": 10, "ab": 20, "bandit": 60}),
        "traffic",
        "add up to 100",
    ),
    (
        "traffic-above-100",
        _set("traffic", {"holdout": 10, "ab": 20, "bandit": 70.5}),
        "traffic",
        "add up to 100",
    ),
    ("unknown-fallback-offer", _set("fallback_offer", "gold_card"), "fallback_offer", "unknown"),
    ("duplicate-offer-key", _duplicate_offer_key, "offers[1].key", "duplicate"),
    ("reserved-no-offer-key", _set("offers.2.key", "no_offer"), "offers[2].key", "reserved"),
    (
        "eligibility-does-not-parse",
        _set("offers.1.eligibility", "cash_flow.balance >="),
        "offers[1].eligibility",
        "",
    ),
    (
        "eligibility-python-code",
        _set("offers.0.eligibility", "__import__('os').system('true')"),
        "offers[0].eligibility",
        "",
    ),
    (
        "eligibility-unknown-field",
        _set("offers.4.eligibility", "profile.shoe_size > 42"),
        "offers[4].eligibility",
        "not in context_fields",
    ),
    (
        "eligibility-reads-protected",
        _set("offers.3.eligibility", "profile.gender == 'female'"),
        "offers[3].eligibility",
        "protected",
    ),
    (
        "eligibility-reads-protected-inside-not",
        _set("offers.0.eligibility", "true and not (profile.ethnicity in ['a', 'b'])"),
        "offers[0].eligibility",
        "protected",
    ),
    (
        "segment-reads-protected",
        _set("segments.2.rule", "profile.religion != 'none'"),
        "segments[2].rule",
        "protected",
    ),
    (
        "segment-does-not-parse",
        _set("segments.0.rule", "profile.life_stage = 'student'"),
        "segments[0].rule",
        "",
    ),
    (
        "segment-unknown-field",
        _set("segments.1.rule", "behavior.clicks > 3"),
        "segments[1].rule",
        "not in context_fields",
    ),
    (
        "incumbent-rule-reads-protected",
        _set("ab_arm.rules.1.when", "profile.nationality == 'x'"),
        "ab_arm.rules[1].when",
        "protected",
    ),
    (
        "incumbent-rule-does-not-parse",
        _set("ab_arm.rules.0.when", "(true"),
        "ab_arm.rules[0].when",
        "",
    ),
    (
        "protected-attribute-as-context-field",
        _add_protected_context_field,
        f"context_fields[{DEMO_FIELDS}].name",
        "protected",
    ),
    (
        "duplicate-context-field",
        _duplicate_context_field,
        f"context_fields[{DEMO_FIELDS}].name",
        "duplicate",
    ),
    (
        "values-on-a-number-field",
        _set("context_fields.4.values", ["1", "2"]),
        "context_fields[4].values",
        "category",
    ),
    ("too-many-offers", _many_offers(MAX_OFFERS + 1, 1), "offers", f"at most {MAX_OFFERS}"),
    # 50 offers x 2 variants + the no-offer arm = 101 arms
    ("too-many-arms", _many_offers(MAX_OFFERS, 2), "offers", f"at most {MAX_ARMS}"),
    (
        "too-many-arms-without-no-offer",
        _both(_many_offers(11, 10), _set("include_no_offer", False)),
        "offers",
        "110",
    ),
    ("too-many-variants", _too_many_variants, "offers[0].variants", "variants"),
    ("duplicate-variant-key", _duplicate_variant, "offers[2].variants[1].key", "duplicate"),
    ("duplicate-segment-key", _duplicate_segment, "segments[3].key", "duplicate"),
    # 13 arms x 0.1 = 1.3
    ("floor-times-arms-above-1", _set("probability_floor", 0.1), "probability_floor", "exceeds"),
    (
        "reward-wait-shorter-than-window",
        _set("reward.reward_wait_hours", 24),
        "reward.reward_wait_hours",
        "shorter",
    ),
    (
        "cap-names-unknown-offer",
        _set("frequency_caps.0.offer", "gold_card"),
        "frequency_caps[0].offer",
        "unknown offer",
    ),
    (
        "cap-offer-on-customer-scope",
        _set("frequency_caps.1.offer", "budgeting_tool"),
        "frequency_caps[1].offer",
        "offer-scoped",
    ),
    (
        "incumbent-rule-unknown-offer",
        _set("ab_arm.rules.2.offer", "gold_card"),
        "ab_arm.rules[2].offer",
        "unknown offer",
    ),
    (
        "incumbent-rule-unknown-variant",
        _set("ab_arm.rules.0.variant", "platinum"),
        "ab_arm.rules[0].variant",
        "no variant",
    ),
    (
        "incumbent-rule-variant-of-another-offer",
        _set("ab_arm.rules.0.variant", "lounge"),
        "ab_arm.rules[0].variant",
        "no variant",
    ),
    (
        "incumbent-default-unknown-offer",
        _set("ab_arm.default_offer", "gold_card"),
        "ab_arm.default_offer",
        "unknown offer",
    ),
    ("incumbent-rules-without-rules", _set("ab_arm.rules", []), "ab_arm.rules", "at least one"),
    # Structure (msgspec): the decoder names the path.
    ("wrong-explorer-kind", _set("explorer", {"kind": "thompson"}), "explorer.kind", "thompson"),
    ("explorer-without-kind", _set("explorer", {"epsilon": 0.1}), "explorer.kind", "kind"),
    ("explorer-parameter-out-of-range", _set("explorer.epsilon", 1.5), "explorer.epsilon", "<="),
    (
        "explorer-parameter-of-another-kind",
        _set("explorer", {"kind": "softmax", "epsilon": 0.1}),
        "explorer.epsilon",
        "unknown field",
    ),
    (
        "bag-size-too-small",
        _set("explorer", {"kind": "bagging", "bag_size": 1}),
        "explorer.bag_size",
        ">=",
    ),
    ("floor-above-half", _set("probability_floor", 0.6), "probability_floor", "<="),
    ("negative-traffic", _set("traffic.ab", -5), "traffic.ab", ">="),
    ("traffic-as-text", _set("traffic.ab", "20"), "traffic.ab", "Expected `float`"),
    ("offer-key-uppercase", _set("offers.0.key", "Savings"), "offers[0].key", "regex"),
    ("offer-without-variants", _set("offers.0.variants", []), "offers[0].variants", "length"),
    ("no-offers", _set("offers", []), "offers", "length"),
    (
        "context-field-unknown-section",
        _set("context_fields.0.name", "identity.email"),
        "context_fields[0].name",
        "regex",
    ),
    (
        "context-field-unknown-type",
        _set("context_fields.0.type", "date"),
        "context_fields[0].type",
        "date",
    ),
    (
        "protected-unknown-section",
        _set("protected_attributes.0", "genes.x"),
        "protected_attributes[0]",
        "regex",
    ),
    (
        "zero-attribution-window",
        _set("reward.attribution_window_hours", 0),
        "reward.attribution_window_hours",
        "> 0",
    ),
    ("no-event-weights", _set("reward.event_weights", {}), "reward.event_weights", "length"),
    ("unknown-aggregation", _set("reward.aggregation", "mean"), "reward.aggregation", "mean"),
    (
        "unknown-cap-scope",
        _set("frequency_caps.0.scope", "household"),
        "frequency_caps[0].scope",
        "household",
    ),
    ("missing-required-top-level", lambda document: document.pop("name"), "name", "missing"),
    (
        "missing-required-nested",
        lambda document: document["offers"][1].pop("product"),
        "offers[1].product",
        "missing",
    ),
    (
        "event-name-not-a-key",
        _set("reward.event_weights", {"Click Through": 1.0}),
        "reward.event_weights",
        "regex",
    ),
    (
        "offer-feature-name-not-a-key",
        _set("offers.0.features", {"APR %": 1.0}),
        "offers[0].features",
        "regex",
    ),
    ("status-is-not-configurable", _set("status", "running"), "status", "unknown field"),
]


@pytest.mark.parametrize(
    ("mutation", "field", "fragment"),
    [pytest.param(m, f, frag, id=name) for name, m, f, frag in INVALID],
)
def test_invalid_config_names_its_field(mutation: Mutation, field: str, fragment: str) -> None:
    document = demo_document()
    mutation(document)

    error = _error(document)

    assert error.field == field, error.message
    assert fragment in error.message


def test_boundaries_are_valid() -> None:
    """The limits themselves are allowed: 100 arms, floor x arms == 1, wait == window."""
    document = demo_document()
    _many_offers(33, 3)(document)  # 99 offer-variant arms + no offer = MAX_ARMS
    document["probability_floor"] = 1 / MAX_ARMS
    document["reward"]["reward_wait_hours"] = document["reward"]["attribution_window_hours"]
    document["traffic"] = {"holdout": 33.3, "ab": 33.3, "bandit": 33.4}

    compiled = validate_config(decode_config(json.dumps(document)))

    assert len(compiled.arms) == MAX_ARMS


UNKNOWN_FIELD_PLACES = [
    # (where the unknown field goes, its name, the field path the error names)
    ("", "owner", "owner"),
    ("offers.0", "is_admin", "offers[0].is_admin"),
    ("offers.0.variants.1", "discount", "offers[0].variants[1].discount"),
    ("context_fields.0", "pii", "context_fields[0].pii"),
    ("segments.0", "sql", "segments[0].sql"),
    ("traffic", "extra_group", "traffic.extra_group"),
    ("ab_arm", "weights", "ab_arm.weights"),
    ("ab_arm.rules.0", "priority", "ab_arm.rules[0].priority"),
    ("explorer", "bias", "explorer.bias"),
    ("reward", "currency", "reward.currency"),
    ("frequency_caps.0", "reset", "frequency_caps[0].reset"),
]


@pytest.mark.parametrize(("where", "name", "expected"), UNKNOWN_FIELD_PLACES)
def test_unknown_fields_are_rejected_everywhere(where: str, name: str, expected: str) -> None:
    """No mass assignment: an unknown field at any depth is an error naming its own path."""
    document = demo_document()
    _set(f"{where}.{name}" if where else name, True)(document)

    error = _error(document)
    assert error.field == expected
    assert "unknown field" in error.message
    # The conversion from builtins (stored configurations, API bodies) rejects them too.
    with pytest.raises(InvalidInput) as caught:
        config_from_builtins(document)
    assert caught.value.field == expected


def test_malformed_json_names_the_body() -> None:
    error = _error('{"key": "x",')
    assert error.field == "body"
    assert "malformed" in error.message


# --------------------------------------------------------------------------------------------
# NaN and infinity where numbers are expected
# --------------------------------------------------------------------------------------------

NUMBER_PATHS = [
    # (path in the document, field named; inside a mapping, msgspec's JSON decoder does not
    # report the key, so the JSON error names the mapping)
    ("traffic.ab", "traffic.ab", "traffic.ab"),
    ("probability_floor", "probability_floor", "probability_floor"),
    ("explorer.epsilon", "explorer.epsilon", "explorer.epsilon"),
    ("reward.event_weights.click", "reward.event_weights.click", "reward.event_weights"),
    ("reward.default_reward", "reward.default_reward", "reward.default_reward"),
    (
        "reward.attribution_window_hours",
        "reward.attribution_window_hours",
        "reward.attribution_window_hours",
    ),
    ("reward.reward_wait_hours", "reward.reward_wait_hours", "reward.reward_wait_hours"),
    ("offers.0.features.rate", "offers[0].features.rate", "offers[0].features"),
    (
        "frequency_caps.0.window_hours",
        "frequency_caps[0].window_hours",
        "frequency_caps[0].window_hours",
    ),
]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(("path", "field", "json_field"), NUMBER_PATHS)
def test_non_finite_numbers_are_rejected(
    path: str, field: str, json_field: str, value: float
) -> None:
    """NaN and infinity cannot come from JSON text, but can from builtins (Python callers)."""
    document = demo_document()
    _set(path, value)(document)

    with pytest.raises(InvalidInput) as caught:
        validate_config(config_from_builtins(document))
    assert caught.value.field == field


@pytest.mark.parametrize(("path", "field", "json_field"), NUMBER_PATHS)
def test_out_of_range_json_numbers_are_rejected(path: str, field: str, json_field: str) -> None:
    """`1e999` is valid JSON syntax; it must not decode to infinity."""
    document = demo_document()
    _set(path, "__BIG__")(document)
    text = json.dumps(document).replace('"__BIG__"', "1e999")

    error = _error(text)
    assert error.field == json_field
    assert "out of range" in error.message


# --------------------------------------------------------------------------------------------
# Explorers
# --------------------------------------------------------------------------------------------

EXPLORER_DOCUMENTS: list[tuple[Document, Explorer]] = [
    ({"kind": "epsilon_greedy", "epsilon": 0.2}, EpsilonGreedy(epsilon=0.2)),
    ({"kind": "epsilon_decay", "epsilon": 0.3}, EpsilonDecay(epsilon=0.3)),
    ({"kind": "explore_first", "first": 500}, ExploreFirst(first=500)),
    ({"kind": "softmax", "lambda": 2}, Softmax(lambda_=2.0)),
    ({"kind": "squarecb", "gamma_scale": 5}, SquareCB(gamma_scale=5.0)),
    ({"kind": "bagging", "bag_size": 8, "epsilon": 0.05}, Bagging(bag_size=8, epsilon=0.05)),
    ({"kind": "cover", "cover_size": 4, "psi": 0.5}, Cover(cover_size=4, psi=0.5)),
    (
        {"kind": "rnd", "rnd_size": 2, "alpha": 0.5, "inverse_lambda": 0.2, "epsilon": 0.01},
        RND(rnd_size=2, alpha=0.5, inverse_lambda=0.2, epsilon=0.01),
    ),
    (
        {"kind": "synthcover", "cover_size": 50, "psi": 0.2, "epsilon": 0.1},
        SynthCover(cover_size=50, psi=0.2, epsilon=0.1),
    ),
]


def test_every_explorer_kind_is_covered() -> None:
    kinds = {type(explorer) for _, explorer in EXPLORER_DOCUMENTS}
    assert kinds == set(typing.get_args(Explorer))


@pytest.mark.parametrize(
    ("explorer_document", "expected"),
    EXPLORER_DOCUMENTS,
    ids=[document["kind"] for document, _ in EXPLORER_DOCUMENTS],
)
def test_explorer_decodes_with_its_parameters(
    explorer_document: Document, expected: Explorer
) -> None:
    document = demo_document()
    document["explorer"] = explorer_document

    config = decode_config(json.dumps(document))
    validate_config(config)

    assert config.explorer == expected
    assert type(config.explorer) is type(expected)
    # The stored form uses the JSON names (`lambda`, not `lambda_`) and round-trips.
    assert config_to_builtins(config)["explorer"] == explorer_document
    assert config_from_builtins(config_to_builtins(config)) == config


@pytest.mark.parametrize(
    "explorer_class", typing.get_args(Explorer), ids=lambda cls: cls.__struct_config__.tag
)
def test_explorer_kind_alone_takes_the_defaults(explorer_class: type[Explorer]) -> None:
    tag = explorer_class.__struct_config__.tag

    explorer = msgspec.json.decode(json.dumps({"kind": tag}), type=Explorer)

    assert explorer == explorer_class()


def test_default_explorer_is_epsilon_greedy() -> None:
    document = demo_document()
    del document["explorer"]

    config: ExperimentConfig = decode_config(json.dumps(document))

    assert config.explorer == EpsilonGreedy()


# --------------------------------------------------------------------------------------------
# Direct identifiers cannot be context fields
# --------------------------------------------------------------------------------------------

IDENTIFIER_FIELD_NAMES = [
    ("profile.name", "name"),
    ("profile.full_name", "name"),
    ("profile.first_name", "name"),
    ("profile.customer_last_name", "name"),
    ("profile.surname", "name"),
    ("profile.email", "email address"),
    ("profile.e_mail", "email address"),
    ("profile.email_2", "email address"),
    ("profile.customer_email_address", "email address"),
    ("profile.phone", "phone number"),
    ("profile.phone_number", "phone number"),
    ("profile.home_phone_number", "phone number"),
    ("profile.mobile", "phone number"),
    ("profile.mobile_no", "phone number"),
    ("profile.address", "postal address"),
    ("profile.address_line_1", "postal address"),
    ("profile.billing_address", "postal address"),
    ("profile.postcode", "postal address"),
    ("profile.zip_code", "postal address"),
    ("profile.iban", "bank account"),
    ("profile.account_number", "bank account"),
    ("profile.sort_code", "bank account"),
    ("profile.card_number", "payment card"),
    ("profile.card_pan", "payment card"),
    ("profile.ssn", "government id"),
    ("profile.national_id", "government id"),
    ("profile.national_insurance_number", "government id"),
    ("profile.passport_number", "government id"),
    ("profile.date_of_birth", "date of birth"),
    ("profile.dob", "date of birth"),
    ("behavior.ip_address", "network or device id"),
    ("behavior.client_ip", "network or device id"),
    ("behavior.device_id", "network or device id"),
    ("profile.customer_id", "customer id"),
]

#: Names near an identifier's that are not one.
ORDINARY_FIELD_NAMES = [
    "behavior.email_opens_30d",
    "behavior.phone_os",
    "behavior.device",
    "trigger.merchant_name",
    "profile.postcode_area",
    "behavior.days_since_login",
    "profile.age_band",
    "cash_flow.balance",
    "profile.is_vip",
    "behavior.time_span",
]


@pytest.mark.parametrize(("name", "kind"), IDENTIFIER_FIELD_NAMES)
def test_identifier_field_names_are_recognised(name: str, kind: str) -> None:
    assert identifier_field_kind(name) == kind


@pytest.mark.parametrize("name", ["profile.phoneNumber", "profile.eMail", "profile.DateOfBirth"])
def test_identifier_names_are_recognised_in_camel_case(name: str) -> None:
    assert identifier_field_kind(name) is not None


@pytest.mark.parametrize("name", ORDINARY_FIELD_NAMES)
def test_ordinary_field_names_are_not_identifiers(name: str) -> None:
    assert identifier_field_kind(name) is None


@pytest.mark.parametrize("kind", ["number", "category", "categories"])
@pytest.mark.parametrize(("name", "label"), IDENTIFIER_FIELD_NAMES[::4])
def test_a_context_field_named_as_an_identifier_is_refused(
    name: str, label: str, kind: str
) -> None:
    document = demo_document()
    document["context_fields"].append({"name": name, "type": kind})
    index = len(document["context_fields"]) - 1

    error = _error(document)

    assert error.field == f"context_fields[{index}].name"
    assert label in error.message


def test_an_identifier_name_is_refused_wherever_it_is_in_the_list() -> None:
    document = demo_document()
    document["context_fields"].insert(2, {"name": "profile.e_mail", "type": "category"})
    assert _error(document).field == "context_fields[2].name"


def test_a_boolean_named_after_an_identifier_is_allowed() -> None:
    """A boolean cannot carry the identifier itself (`has an email address: yes`)."""
    document = demo_document()
    document["context_fields"].append({"name": "profile.email", "type": "boolean"})
    compiled = validate_config(decode_config(json.dumps(document)))
    assert "profile.email" in compiled.context_fields


def test_ordinary_names_pass_validation() -> None:
    document = demo_document()
    present = {f["name"] for f in document["context_fields"]}
    document["context_fields"] += [
        {"name": name, "type": "number"} for name in ORDINARY_FIELD_NAMES if name not in present
    ]
    compiled = validate_config(decode_config(json.dumps(document)))
    assert set(ORDINARY_FIELD_NAMES) <= set(compiled.context_fields)


def test_a_protected_attribute_may_have_an_identifier_name() -> None:
    """Protected attributes are dropped from every context; naming one is no risk."""
    document = demo_document()
    document["protected_attributes"].append("profile.date_of_birth")
    compiled = validate_config(decode_config(json.dumps(document)))
    assert "profile.date_of_birth" in compiled.protected
