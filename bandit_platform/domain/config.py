"""The experiment configuration: one validated schema for the API, the UI and config files.

Two layers of validation:

* **Structure** is checked by msgspec when a document is decoded (`decode_config`): types,
  required fields, unknown fields, numeric ranges. msgspec's error names the JSON path.
* **Meaning** is checked by `validate_config`: references between parts (the fallback offer
  exists, cap offers exist, incumbent rules name real offers), expressions parse and only read
  allowed, non-protected context fields, the traffic split adds up to 100, the probability
  floor is achievable, and no context field names a direct identifier
  (`identifier_field_kind`). Each problem raises `InvalidInput` whose `field` is the JSON path.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec

from bandit_platform.domain.errors import ExpressionError, InvalidInput
from bandit_platform.domain.expressions import Expression, parse_expression

#: The arm key that stands for "show nothing". Offer keys may not take it.
NO_OFFER = "no_offer"

#: Context sections a request may carry; each field is `section.name`.
CONTEXT_SECTIONS = ("profile", "cash_flow", "behavior", "trigger")

MAX_OFFERS = 50
MAX_VARIANTS_PER_OFFER = 10
MAX_ARMS = 100
MAX_CONTEXT_FIELDS = 200

Key = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_\-]{0,62}$", max_length=63)]
FieldName = Annotated[
    str, msgspec.Meta(pattern=r"^(profile|cash_flow|behavior|trigger)\.[a-z][a-z0-9_]{0,62}$")
]
Text = Annotated[str, msgspec.Meta(max_length=500)]
ShortText = Annotated[str, msgspec.Meta(max_length=120)]
Percent = Annotated[float, msgspec.Meta(ge=0.0, le=100.0)]
Probability = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Hours = Annotated[float, msgspec.Meta(gt=0.0, le=24.0 * 366)]
FeatureValue = str | float | bool


class _Schema(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Base of every configuration struct: unknown fields are an error (no mass assignment)."""


class Variant(_Schema, frozen=True, kw_only=True):
    """A creative variant of an offer: the message the customer sees."""

    key: Key
    tone: Literal["neutral", "warm", "urgent", "informative", "playful"] = "neutral"
    headline: ShortText = ""
    image: ShortText | None = None
    call_to_action: ShortText = ""


class Offer(_Schema, frozen=True, kw_only=True):
    """A product offer the bank may show, with its eligibility rule and creative variants."""

    key: Key
    product: Key
    name: ShortText
    description: Text = ""
    features: dict[Key, FeatureValue] = msgspec.field(default_factory=dict)
    variants: Annotated[list[Variant], msgspec.Meta(min_length=1)]
    eligibility: Annotated[str, msgspec.Meta(max_length=2000)] = "true"


class Segment(_Schema, frozen=True, kw_only=True):
    """A named group of customers defined by a rule over context, for targeting and reports."""

    key: Key
    description: Text = ""
    rule: Annotated[str, msgspec.Meta(max_length=2000)]


class ContextField(_Schema, frozen=True, kw_only=True):
    """One context field the experiment accepts (the allow-list), with its type."""

    name: FieldName
    type: Literal["number", "boolean", "category", "categories"]
    values: list[ShortText] | None = None
    description: Text = ""


class TrafficSplit(_Schema, frozen=True, kw_only=True):
    """Percent of customers in each group; the three add up to 100."""

    holdout: Percent
    ab: Percent
    bandit: Percent


class IncumbentRule(_Schema, frozen=True, kw_only=True):
    """One rule of the incumbent rule list: when `when` holds, show `offer`."""

    when: Annotated[str, msgspec.Meta(max_length=2000)]
    offer: str
    variant: str | None = None


class ABArm(_Schema, frozen=True, kw_only=True):
    """What the A-B group sees: uniform over eligible offers, or the incumbent rule list.

    With `incumbent_rules`, the first rule whose condition holds and whose offer is eligible
    wins (probability 1); when none does, `default_offer` (or no offer) is shown.
    """

    kind: Literal["uniform", "incumbent_rules"] = "uniform"
    rules: list[IncumbentRule] = msgspec.field(default_factory=list)
    default_offer: str | None = None


class EpsilonGreedy(_Schema, frozen=True, kw_only=True, tag="epsilon_greedy", tag_field="kind"):
    """Show the best-scoring offer most of the time and a random one with probability epsilon."""

    epsilon: Probability = 0.1


class EpsilonDecay(_Schema, frozen=True, kw_only=True, tag="epsilon_decay", tag_field="kind"):
    """Like epsilon-greedy, but exploration shrinks as the model sees more customers."""

    epsilon: Probability = 0.2


class ExploreFirst(_Schema, frozen=True, kw_only=True, tag="explore_first", tag_field="kind"):
    """Show offers at random to the first `first` customers, then always the best-scoring one."""

    first: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 1000


class Softmax(_Schema, frozen=True, kw_only=True, tag="softmax", tag_field="kind"):
    """Show offers in proportion to how good they look; `lambda_` sets how greedy."""

    lambda_: Annotated[float, msgspec.Meta(ge=0.0, le=1000.0)] = msgspec.field(
        default=1.0, name="lambda"
    )


class SquareCB(_Schema, frozen=True, kw_only=True, tag="squarecb", tag_field="kind"):
    """Explore offers in proportion to how far they trail the best (provably efficient)."""

    gamma_scale: Annotated[float, msgspec.Meta(gt=0.0, le=100_000.0)] = 10.0


class Bagging(_Schema, frozen=True, kw_only=True, tag="bagging", tag_field="kind"):
    """Train several models on resampled data and show what a randomly picked one prefers."""

    bag_size: Annotated[int, msgspec.Meta(ge=2, le=32)] = 5
    epsilon: Probability = 0.0


class Cover(_Schema, frozen=True, kw_only=True, tag="cover", tag_field="kind"):
    """Keep a small set of diverse policies and explore where they disagree."""

    cover_size: Annotated[int, msgspec.Meta(ge=1, le=32)] = 3
    psi: Annotated[float, msgspec.Meta(ge=0.0, le=100.0)] = 1.0


class RND(_Schema, frozen=True, kw_only=True, tag="rnd", tag_field="kind"):
    """Explore offers the model has seen little of for customers like this one (novelty)."""

    rnd_size: Annotated[int, msgspec.Meta(ge=1, le=32)] = 3
    alpha: Annotated[float, msgspec.Meta(gt=0.0, le=100.0)] = 0.1
    inverse_lambda: Annotated[float, msgspec.Meta(gt=0.0, le=100.0)] = 0.1
    epsilon: Probability = 0.0


class SynthCover(_Schema, frozen=True, kw_only=True, tag="synthcover", tag_field="kind"):
    """Imagine alternative plausible models and explore where they would choose differently."""

    cover_size: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100
    psi: Annotated[float, msgspec.Meta(gt=0.0, le=100.0)] = 0.1
    epsilon: Probability = 0.05


Explorer = (
    EpsilonGreedy
    | EpsilonDecay
    | ExploreFirst
    | Softmax
    | SquareCB
    | Bagging
    | Cover
    | RND
    | SynthCover
)
EXPLORERS: tuple[type[_Schema], ...] = (
    EpsilonGreedy,
    EpsilonDecay,
    ExploreFirst,
    Softmax,
    SquareCB,
    Bagging,
    Cover,
    RND,
    SynthCover,
)


def explorer_catalogue() -> list[dict[str, Any]]:
    """Every explorer with its one-sentence explanation and its parameters' defaults."""
    catalogue = []
    for explorer_type in EXPLORERS:
        default = explorer_type()
        parameters = msgspec.to_builtins(default)
        kind = parameters.pop("kind")
        catalogue.append(
            {
                "kind": kind,
                "explanation": (explorer_type.__doc__ or "").strip().splitlines()[0],
                "parameters": parameters,
            }
        )
    return catalogue


class RewardHorizon(_Schema, frozen=True, kw_only=True):
    """One way of turning a customer's events after a decision into a reward.

    The reward is the aggregation (`sum`, `max` or `earliest`) of `weight x value` over the
    events that occur inside the attribution window; when the reward wait time passes with no
    such event, `default_reward` applies. The wait defaults to the window.
    """

    name: Key
    event_weights: Annotated[dict[Key, float], msgspec.Meta(min_length=1)]
    attribution_window_hours: Hours = 168.0
    reward_wait_hours: Hours | None = None
    default_reward: float = 0.0
    aggregation: Literal["sum", "max", "earliest"] = "sum"


class RewardDefinition(_Schema, frozen=True, kw_only=True):
    """The reward the learner uses (`name`, default `primary`), plus horizons for reports.

    For example: learn from "applied within 7 days" while reports also show "clicked within
    1 hour" and "account funded within 30 days".
    """

    name: Key = "primary"
    event_weights: Annotated[dict[Key, float], msgspec.Meta(min_length=1)]
    attribution_window_hours: Hours = 168.0
    reward_wait_hours: Hours | None = None
    default_reward: float = 0.0
    aggregation: Literal["sum", "max", "earliest"] = "sum"
    report_horizons: list[RewardHorizon] = msgspec.field(default_factory=list)

    def learning_horizon(self) -> RewardHorizon:
        """The horizon whose rewards the learner uses."""
        return RewardHorizon(
            name=self.name,
            event_weights=self.event_weights,
            attribution_window_hours=self.attribution_window_hours,
            reward_wait_hours=self.reward_wait_hours,
            default_reward=self.default_reward,
            aggregation=self.aggregation,
        )

    def horizons(self) -> list[RewardHorizon]:
        """Every horizon, the learning one first."""
        return [self.learning_horizon(), *self.report_horizons]

    def accepted_events(self) -> frozenset[str]:
        """Every event that carries a weight in some horizon."""
        return frozenset(e for h in self.horizons() for e in h.event_weights)


class LearningSettings(_Schema, frozen=True, kw_only=True):
    """How the model learns and is served.

    Attributes:
        publish_every_examples: publish a snapshot after this many new examples...
        publish_every_seconds: ...or after this long with at least one new example.
        model_deadline_ms: a prediction slower than this is discarded and the fallback offer
            is served instead (flagged, not learned from).
        apprentice: serve the incumbent rules in the bandit group while the model learns to
            imitate them; switch to online learning when it matches them often enough.
        apprentice_match_rate: the share of recent decisions on which the model must agree
            with the incumbent rules before switching.
        apprentice_min_examples: and the least number of imitated decisions before switching.
    """

    publish_every_examples: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 500
    publish_every_seconds: Annotated[float, msgspec.Meta(gt=0.0, le=86_400.0)] = 60.0
    model_deadline_ms: Annotated[float, msgspec.Meta(gt=0.0, le=10_000.0)] = 50.0
    apprentice: bool = False
    apprentice_match_rate: Probability = 0.9
    apprentice_min_examples: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 500


class FrequencyCap(_Schema, frozen=True, kw_only=True):
    """At most `max_offers` shown per customer in `window_hours`.

    With `scope="offer"` the cap counts one offer (`offer`) or, when `offer` is omitted, each
    offer separately; with `scope="customer"` it counts every offer shown.
    """

    scope: Literal["offer", "customer"]
    max_offers: Annotated[int, msgspec.Meta(ge=0, le=10_000)]
    window_hours: Hours
    offer: str | None = None


class Guardrail(_Schema, frozen=True, kw_only=True):
    """A harm metric (complaints, opt-outs, unsubscribes) that switches the bandit group to the
    experiment's baseline when it is breached.

    A decision counts for the metric when at least one outcome event named `metric` occurred
    within `window_hours` after it; the rate is the share of such decisions among those whose
    window has passed. The guardrail trips when, at `confidence`, the bandit group's rate
    exceeds the holdout's by more than `max_increase`, or exceeds `max_rate`. At least one of
    the two thresholds is required.

    Attributes:
        metric: the outcome event counted (e.g. `complaint`, `opt_out`, `unsubscribe`); the
            outcome endpoint accepts it even when it carries no reward weight.
        window_hours: how long after a decision its events count.
        max_increase: the largest tolerated absolute increase of the rate per decision, bandit
            group minus holdout (e.g. 0.005: half a percentage point); checked only when the
            split has a holdout (without one, `max_rate` is required).
        max_rate: the largest tolerated rate per decision in the bandit group.
        min_decisions: decisions per compared group, past their window, before it may trip.
        confidence: how sure the check must be that the threshold is exceeded.
    """

    metric: Key
    window_hours: Hours = 168.0
    max_increase: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None
    max_rate: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None
    min_decisions: Annotated[int, msgspec.Meta(ge=2, le=100_000_000)] = 1000
    confidence: Annotated[float, msgspec.Meta(ge=0.5, le=0.9999)] = 0.95


class ExperimentConfig(_Schema, frozen=True, kw_only=True):
    """The whole, versioned configuration of one experiment."""

    key: Key
    name: ShortText
    description: Text = ""
    surfaces: Annotated[list[Key], msgspec.Meta(min_length=1, max_length=50)]
    context_fields: Annotated[list[ContextField], msgspec.Meta(max_length=MAX_CONTEXT_FIELDS)]
    offers: Annotated[list[Offer], msgspec.Meta(min_length=1)]
    segments: list[Segment] = msgspec.field(default_factory=list)
    include_no_offer: bool = True
    traffic: TrafficSplit
    ab_arm: ABArm = msgspec.field(default_factory=ABArm)
    explorer: Explorer = msgspec.field(default_factory=EpsilonGreedy)
    probability_floor: Annotated[float, msgspec.Meta(ge=0.0, le=0.5)] = 0.01
    reward: RewardDefinition
    learning: LearningSettings = msgspec.field(default_factory=LearningSettings)
    frequency_caps: list[FrequencyCap] = msgspec.field(default_factory=list)
    consent_required: bool = True
    protected_attributes: list[FieldName] = msgspec.field(default_factory=list)
    fallback_offer: str | None = None
    guardrails: Annotated[list[Guardrail], msgspec.Meta(max_length=20)] = msgspec.field(
        default_factory=list
    )


@dataclass(frozen=True, slots=True)
class Arm:
    """One choice the policy can make: an offer with one of its variants, or no offer."""

    offer: str | None
    variant: str | None

    @property
    def key(self) -> str:
        """Stable text key, `offer/variant` or `no_offer`."""
        if self.offer is None:
            return NO_OFFER
        return f"{self.offer}/{self.variant}"


@dataclass(frozen=True)
class CompiledExperiment:
    """A validated configuration with its expressions parsed and its lookups built."""

    config: ExperimentConfig
    offers: Mapping[str, Offer]
    eligibility: Mapping[str, Expression]
    segments: Mapping[str, Expression]
    incumbent_rules: tuple[tuple[Expression, IncumbentRule], ...]
    context_fields: Mapping[str, ContextField]
    protected: frozenset[str]
    #: Derived data that layers above the domain compute once per compiled configuration
    #: (e.g. `features.context.arm_namespaces`); not part of the configuration's identity.
    derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def arms(self) -> list[Arm]:
        """Every arm of the experiment, in configuration order (no-offer last)."""
        arms = [Arm(o.key, v.key) for o in self.config.offers for v in o.variants]
        if self.config.include_no_offer:
            arms.append(Arm(None, None))
        return arms


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


#: Direct identifiers, by what a context field's name ends with. A name is split into words
#: (at `_`, `-`, `.` and camelCase), trailing numbers are dropped (`email_2`), and the words of
#: each ending are joined (`e_mail` -> `email`, `phoneNumber` -> `phonenumber`,
#: `home_phone_number` -> ..., `phonenumber`), so `customer_email`, `billing_address` or
#: `card_pan` are identifiers while `email_opens_30d` or `phone_os` are not.
IDENTIFIER_ENDINGS: dict[str, tuple[str, ...]] = {
    "name": _words(
        "fullname firstname lastname givenname givennames surname familyname middlename "
        "maidenname forename forenames customername legalname displayname username"
    ),
    "email address": ("email", "emailaddress", "emailaddr"),
    "phone number": _words(
        "phone phonenumber phoneno phonenum telephone telephonenumber telno telnumber mobile "
        "mobilenumber mobileno mobilephone cellphone cellnumber msisdn"
    ),
    "postal address": _words(
        "address addressline streetaddress street postcode postalcode zipcode zip"
    ),
    "bank account": _words(
        "iban accountnumber accountno accountnum acctnumber acctno bankaccount "
        "bankaccountnumber sortcode routingnumber"
    ),
    "payment card": ("cardnumber", "cardno", "cardnum", "pan", "cvv", "cvc"),
    "government id": _words(
        "ssn socialsecuritynumber socialsecurityno nationalid nationalidnumber "
        "nationalidentifier nationalinsurancenumber nino taxid taxnumber passport "
        "passportnumber passportno driverslicense driverslicence driverlicense driverlicence "
        "drivinglicense drivinglicence licensenumber licencenumber idnumber idcard"
    ),
    "date of birth": ("dateofbirth", "birthdate", "birthday", "dob"),
    "network or device id": _words(
        "ip ipaddress ipaddr ipv4 ipv6 macaddress macaddr deviceid deviceidentifier imei idfa "
        "gaid advertisingid udid"
    ),
    "customer id": _words(
        "customerid customernumber customerno clientid clientnumber userid loginid loginname"
    ),
}
#: Names that are identifiers only on their own (`name`, but not `merchant_name`).
IDENTIFIER_NAMES: dict[str, tuple[str, ...]] = {
    "name": ("name",),
    "email address": ("mail",),
    "phone number": ("tel", "cell"),
    "government id": ("nin", "tin", "id"),
    "customer id": ("cif", "login"),
}
_IDENTIFIER_ENDING = {word: kind for kind, words in IDENTIFIER_ENDINGS.items() for word in words}
_IDENTIFIER_NAME = {word: kind for kind, words in IDENTIFIER_NAMES.items() for word in words}
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD_SEPARATORS = re.compile(r"[^A-Za-z0-9]+")


def identifier_field_kind(name: str) -> str | None:
    """The kind of direct identifier a context field's name denotes (`profile.e_mail`:
    "email address"), or None. The section (before the first `.`) is ignored."""
    local = name.split(".", 1)[1] if "." in name else name
    words = [w for w in _WORD_SEPARATORS.split(_CAMEL.sub("_", local).lower()) if w]
    for candidate in (words, _without_trailing_numbers(words)):
        if not candidate:
            continue
        found = _IDENTIFIER_NAME.get("".join(candidate))
        if found is not None:
            return found
        for start in range(len(candidate)):
            found = _IDENTIFIER_ENDING.get("".join(candidate[start:]))
            if found is not None:
                return found
    return None


def _without_trailing_numbers(words: list[str]) -> list[str]:
    trimmed = list(words)
    while trimmed and trimmed[-1].isdigit():
        trimmed.pop()
    if trimmed:
        trimmed[-1] = trimmed[-1].rstrip("0123456789")
    return [w for w in trimmed if w]


_DECODER = msgspec.json.Decoder(ExperimentConfig)


def _msgspec_field(message: str) -> str | None:
    # "- at `$.a.b`", or "- at `key` in `$.a.b`" for a mapping's key
    match = re.search(r"(?:at|in) `\$\.?([^`]*)`", message)
    path = match.group(1) if match is not None else ""
    # msgspec writes a mapping's entry as `[...]` without its key: name the mapping instead.
    path = path.split("[...]", 1)[0]
    # An unknown or missing field is named by its own path, also at the top level (where
    # msgspec gives no path at all).
    named = re.match(r"Object (?:contains unknown|missing required) field `([^`]*)`", message)
    if named is not None:
        return f"{path}.{named.group(1)}" if path else named.group(1)
    return path or None


def decode_config(document: bytes | str) -> ExperimentConfig:
    """Decode a JSON document into a structurally valid `ExperimentConfig`.

    Raises:
        InvalidInput: naming the JSON path of the first structural problem.
    """
    try:
        return _DECODER.decode(document)
    except msgspec.ValidationError as exc:
        raise InvalidInput(str(exc), field=_msgspec_field(str(exc))) from exc
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}", field="body") from exc


def config_from_builtins(data: Mapping[str, Any]) -> ExperimentConfig:
    """Convert already-parsed JSON (for example from a request) into an `ExperimentConfig`."""
    try:
        return msgspec.convert(data, ExperimentConfig)
    except msgspec.ValidationError as exc:
        raise InvalidInput(str(exc), field=_msgspec_field(str(exc))) from exc


def config_to_builtins(config: ExperimentConfig) -> dict[str, Any]:
    """The configuration as JSON-ready builtins (the stored form)."""
    result: dict[str, Any] = msgspec.to_builtins(config)
    return result


def _parse(source: str, field: str) -> Expression:
    try:
        return parse_expression(source)
    except ExpressionError as exc:
        raise InvalidInput(exc.message, field=field) from exc


def _check_fields(
    expression: Expression,
    field: str,
    allowed: Mapping[str, ContextField],
    protected: frozenset[str],
) -> None:
    for name in sorted(expression.fields()):
        if name in protected:
            raise InvalidInput(
                f"rule reads protected attribute {name!r}; protected attributes may not "
                "drive a decision",
                field=field,
            )
        if name not in allowed:
            raise InvalidInput(f"rule reads {name!r}, which is not in context_fields", field=field)


def _unique(keys: list[str], field: str) -> None:
    seen: set[str] = set()
    for index, key in enumerate(keys):
        if key in seen:
            raise InvalidInput(f"duplicate key {key!r}", field=f"{field}[{index}].key")
        seen.add(key)


def validate_config(config: ExperimentConfig) -> CompiledExperiment:
    """Check the meaning of a structurally valid configuration and compile it.

    Raises:
        InvalidInput: naming the JSON path of the first problem found.
    """
    if len(config.offers) > MAX_OFFERS:
        raise InvalidInput(f"at most {MAX_OFFERS} offers are allowed", field="offers")
    _unique([o.key for o in config.offers], "offers")
    _unique([s.key for s in config.segments], "segments")
    field_names = [f.name for f in config.context_fields]
    seen_fields: set[str] = set()
    for index, name in enumerate(field_names):
        if name in seen_fields:
            raise InvalidInput(f"duplicate field {name!r}", field=f"context_fields[{index}].name")
        seen_fields.add(name)
    protected = frozenset(config.protected_attributes)
    for index, context_field in enumerate(config.context_fields):
        identifier = (
            identifier_field_kind(context_field.name) if context_field.type != "boolean" else None
        )
        if identifier is not None:
            # A boolean cannot carry the identifier itself (`profile.has_email`).
            raise InvalidInput(
                f"{context_field.name!r} names a direct identifier ({identifier}), which may "
                "not be a context field: send a coarse, derived feature instead (e.g. an age "
                "band, not a date of birth)",
                field=f"context_fields[{index}].name",
            )
        if context_field.name in protected:
            raise InvalidInput(
                f"{context_field.name!r} is a protected attribute and cannot be a context field",
                field=f"context_fields[{index}].name",
            )
        if context_field.values is not None and context_field.type not in (
            "category",
            "categories",
        ):
            raise InvalidInput(
                "values are only allowed for category fields",
                field=f"context_fields[{index}].values",
            )
    allowed = {f.name: f for f in config.context_fields}

    offers: dict[str, Offer] = {}
    eligibility: dict[str, Expression] = {}
    arm_count = 1 if config.include_no_offer else 0
    for index, offer in enumerate(config.offers):
        if offer.key == NO_OFFER:
            raise InvalidInput(f"{NO_OFFER!r} is reserved", field=f"offers[{index}].key")
        if len(offer.variants) > MAX_VARIANTS_PER_OFFER:
            raise InvalidInput(
                f"at most {MAX_VARIANTS_PER_OFFER} variants per offer",
                field=f"offers[{index}].variants",
            )
        _unique([v.key for v in offer.variants], f"offers[{index}].variants")
        for name, value in offer.features.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise InvalidInput(
                    "feature values must be finite", field=f"offers[{index}].features.{name}"
                )
        expression = _parse(offer.eligibility or "true", f"offers[{index}].eligibility")
        _check_fields(expression, f"offers[{index}].eligibility", allowed, protected)
        offers[offer.key] = offer
        eligibility[offer.key] = expression
        arm_count += len(offer.variants)
    if arm_count > MAX_ARMS:
        raise InvalidInput(
            f"{arm_count} offer-variant arms; at most {MAX_ARMS} are allowed", field="offers"
        )
    if arm_count < 1:
        raise InvalidInput("the experiment has no arm", field="offers")

    segments: dict[str, Expression] = {}
    for index, segment in enumerate(config.segments):
        expression = _parse(segment.rule, f"segments[{index}].rule")
        _check_fields(expression, f"segments[{index}].rule", allowed, protected)
        segments[segment.key] = expression

    split = config.traffic
    if abs(split.holdout + split.ab + split.bandit - 100.0) > 1e-9:
        raise InvalidInput(
            "holdout + ab + bandit must add up to 100 percent "
            f"(got {split.holdout + split.ab + split.bandit:g})",
            field="traffic",
        )

    rules: list[tuple[Expression, IncumbentRule]] = []
    for index, rule in enumerate(config.ab_arm.rules):
        where = f"ab_arm.rules[{index}]"
        expression = _parse(rule.when, f"{where}.when")
        _check_fields(expression, f"{where}.when", allowed, protected)
        _check_arm_reference(
            rule.offer, rule.variant, offers, f"{where}.offer", variant_field=f"{where}.variant"
        )
        rules.append((expression, rule))
    if config.ab_arm.kind == "incumbent_rules" and not rules:
        raise InvalidInput("incumbent_rules needs at least one rule", field="ab_arm.rules")
    if config.ab_arm.default_offer is not None:
        _check_arm_reference(config.ab_arm.default_offer, None, offers, "ab_arm.default_offer")

    if config.fallback_offer is not None and config.fallback_offer not in offers:
        raise InvalidInput(f"unknown offer {config.fallback_offer!r}", field="fallback_offer")
    for index, cap in enumerate(config.frequency_caps):
        if cap.offer is not None:
            if cap.scope != "offer":
                raise InvalidInput(
                    "offer is only allowed on offer-scoped caps",
                    field=f"frequency_caps[{index}].offer",
                )
            if cap.offer not in offers:
                raise InvalidInput(
                    f"unknown offer {cap.offer!r}", field=f"frequency_caps[{index}].offer"
                )

    if config.probability_floor * arm_count > 1.0 + 1e-12:
        raise InvalidInput(
            f"a floor of {config.probability_floor:g} over {arm_count} arms exceeds 1",
            field="probability_floor",
        )
    _check_reward(config.reward)
    if config.learning.apprentice and config.ab_arm.kind != "incumbent_rules":
        raise InvalidInput(
            "apprentice mode imitates the incumbent rules: set ab_arm.kind to incumbent_rules",
            field="learning.apprentice",
        )
    _check_guardrails(config)
    for index, name in enumerate(config.protected_attributes):
        if name.split(".", 1)[0] not in CONTEXT_SECTIONS:
            raise InvalidInput(
                f"unknown section in {name!r}", field=f"protected_attributes[{index}]"
            )

    return CompiledExperiment(
        config=config,
        offers=offers,
        eligibility=eligibility,
        segments=segments,
        incumbent_rules=tuple(rules),
        context_fields=allowed,
        protected=protected,
    )


def _check_reward(reward: RewardDefinition) -> None:
    names = [reward.name] + [h.name for h in reward.report_horizons]
    for index, horizon in enumerate(reward.horizons()):
        where = "reward" if index == 0 else f"reward.report_horizons[{index - 1}]"
        if names.index(horizon.name) != index:
            raise InvalidInput(f"duplicate horizon {horizon.name!r}", field=f"{where}.name")
        for event, weight in horizon.event_weights.items():
            if not math.isfinite(weight):
                raise InvalidInput("weights must be finite", field=f"{where}.event_weights.{event}")
        if not math.isfinite(horizon.default_reward):
            raise InvalidInput("must be finite", field=f"{where}.default_reward")
        if (
            horizon.reward_wait_hours is not None
            and horizon.reward_wait_hours < horizon.attribution_window_hours
        ):
            raise InvalidInput(
                "the reward wait time cannot be shorter than the attribution window",
                field=f"{where}.reward_wait_hours",
            )


def _check_guardrails(config: ExperimentConfig) -> None:
    seen: set[str] = set()
    for index, guardrail in enumerate(config.guardrails):
        where = f"guardrails[{index}]"
        if guardrail.metric in seen:
            raise InvalidInput(
                f"duplicate guardrail metric {guardrail.metric!r}", field=f"{where}.metric"
            )
        seen.add(guardrail.metric)
        if guardrail.max_increase is None and guardrail.max_rate is None:
            raise InvalidInput("set max_increase, max_rate or both", field=where)
        if (
            guardrail.max_increase is not None
            and guardrail.max_rate is None
            and config.traffic.holdout <= 0.0
        ):
            # Without a holdout only max_rate can trip; a guardrail that never can is a mistake.
            raise InvalidInput(
                "max_increase compares with the holdout group and traffic.holdout is 0: "
                "add a holdout or a max_rate",
                field=f"{where}.max_increase",
            )


def _check_arm_reference(
    offer: str,
    variant: str | None,
    offers: Mapping[str, Offer],
    field: str,
    variant_field: str | None = None,
) -> None:
    if offer not in offers:
        raise InvalidInput(f"unknown offer {offer!r}", field=field)
    if variant is not None and variant not in {v.key for v in offers[offer].variants}:
        raise InvalidInput(
            f"offer {offer!r} has no variant {variant!r}", field=variant_field or field
        )
