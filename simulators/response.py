"""Ground-truth responses to offers: known probabilities, known delays, exact expected rewards.

After a decision, a customer either clicks the offer, dismisses it, or does nothing; a click
may lead to an application and an application to a conversion. Independently of what was
shown (an offer, another offer, or nothing), the customer may also convert on some product
on their own (an ORGANIC conversion), so a holdout group still converts and the lift of
showing an offer is real and known.

Probabilities for a situation `s` (customer, trigger, surface, time, earlier exposures) and an
arm `(o, v)` whose offer `o` serves need `n = n_o(s)`, with `sigmoid(x) = 1 / (1 + e^-x)`:

* click: `p_c = sigmoid(a_o + 3.2 n + k_tone A_tone(v) + k_msg m_ov(s) + b_surface,o
  + g_trigger,o + h(hour)) * phi`, with fatigue `phi = exp(-F L)`,
  load `L = sum_i exp(-age_i / tau)` over the hours since each earlier exposure of `o`
  (`F = 0.4`, `tau = 96 h`), the customer's tone affinity `A_tone` and a message fit
  `m_ov(s)` (for example the "paycheck" savings message on a pay-day trigger);
* dismiss: `p_d = (1 - p_c) sigmoid(-1.6 + 1.5 (0.5 - n) + 0.5 L)`;
* apply given click: `p_a = sigmoid(c_o + 2.5 n)`;
* convert given apply: `p_v = q_o` (deposit and tool products) or
  `q_o sigmoid((score - pivot_o) / 35)` (credit products: approval);
* organic: each product `q` converts organically with `r_q = k_org,q n_q(s)`; at most one
  organic conversion happens, with probability `p_o = 1 - prod_q (1 - r_q)`, on product `q`
  with probability `r_q / sum r`.

Delays after the decision are exponential: click, apply and convert stages have per-offer
means (minutes, hours, days), so the time of stage `k` is a sum of `k` exponentials
(hypoexponential); dismiss and organic conversion have their own means.

A reward horizon turns the events inside `[0, w]` into `weight x value` contributions (every
event has value 1) and aggregates them with `sum`, `max` or `earliest`, or gives its default
reward when no weighted event falls inside the window, exactly like the platform's reward
join. `expected_reward` computes its expectation in closed form; `sample_outcomes` draws
events with the same law.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from bandit_platform.domain.config import NO_OFFER, Arm, RewardHorizon
from simulators.population import NEEDS, TONES, TRIGGERS, Customer

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

SURFACES: Final = ("home_feed", "post_login_banner", "transaction_detail")
EVENTS: Final = ("click", "apply", "convert", "dismiss")
#: Every event carries this value; the reward is `weight x value`.
EVENT_VALUE: Final = 1.0


class UnknownArm(ValueError):
    """An offer or variant that the simulated bank does not have."""


@dataclass(frozen=True, slots=True)
class OfferSpec:
    """The ground truth of one demo offer.

    Attributes:
        key: offer key (as in the demo experiment).
        need: the need (one of `NEEDS`) the offer serves.
        variants: `(variant key, tone)` pairs, as in the demo experiment.
        click_intercept: `a_o`, the click log-odds at zero need.
        apply_intercept: `c_o`, the apply-given-click log-odds at zero need.
        convert_probability: `q_o`, the convert-given-apply probability (the ceiling for
            credit products).
        approval_pivot: credit score at which a credit product's approval is half of `q_o`;
            None for products without a credit check.
        stage_means_hours: mean delays of click (after the decision), apply (after the click)
            and convert (after the application); they must differ.
        organic_scale: `k_org`, the organic conversion probability at need 1.
    """

    key: str
    need: str
    variants: tuple[tuple[str, str], ...]
    click_intercept: float
    apply_intercept: float
    convert_probability: float
    approval_pivot: float | None
    stage_means_hours: tuple[float, float, float]
    organic_scale: float

    def tone(self, variant: str) -> str:
        """The tone of one of the offer's variants."""
        for key, tone in self.variants:
            if key == variant:
                return tone
        raise UnknownArm(f"offer {self.key!r} has no variant {variant!r}")


#: The demo experiment's six offers, in its order.
OFFERS: Final[Mapping[str, OfferSpec]] = {
    spec.key: spec
    for spec in (
        OfferSpec(
            "high_yield_savings", "savings", (("paycheck", "warm"), ("rate", "informative")),
            -3.9, -1.0, 0.85, None, (0.1, 2.0, 24.0), 0.02,
        ),
        OfferSpec(
            "premium_travel_card", "travel", (("lounge", "warm"), ("fees", "informative")),
            -4.3, -1.6, 0.9, 690.0, (0.1, 6.0, 96.0), 0.008,
        ),
        OfferSpec(
            "debt_consolidation_loan", "debt_consolidation",
            (("one_payment", "informative"), ("save_interest", "urgent")),
            -4.4, -1.4, 0.85, 650.0, (0.1, 12.0, 72.0), 0.006,
        ),
        OfferSpec(
            "mortgage_prequalification", "home_buying",
            (("know_budget", "informative"), ("dream_home", "warm")),
            -4.6, -1.8, 0.8, 660.0, (0.1, 24.0, 240.0), 0.01,
        ),
        OfferSpec(
            "overdraft_protection", "overdraft_protection",
            (("no_fees", "informative"), ("peace_of_mind", "warm")),
            -4.1, -0.9, 0.9, None, (0.1, 1.0, 6.0), 0.01,
        ),
        OfferSpec(
            "budgeting_tool", "budgeting_help",
            (("insights", "informative"), ("alerts", "playful")),
            -4.2, -1.0, 0.9, None, (0.1, 0.5, 2.0), 0.02,
        ),
    )
}  # fmt: skip
OFFER_KEYS: Final = tuple(OFFERS)

#: Click log-odds added by the surface, per offer (missing = 0).
SURFACE_EFFECTS: Final[Mapping[str, Mapping[str, float]]] = {
    "home_feed": {},
    "post_login_banner": {o: 0.2 for o in OFFER_KEYS} | {"mortgage_prequalification": 0.0},
    "transaction_detail": {o: -0.3 for o in OFFER_KEYS}
    | {"overdraft_protection": 0.3, "budgeting_tool": 0.2},
}
#: Click log-odds added by the trigger, per offer (missing = 0).
TRIGGER_EFFECTS: Final[Mapping[str, Mapping[str, float]]] = {
    "app_open": {},
    "paycheck_deposit": {"high_yield_savings": 0.5, "budgeting_tool": 0.1},
    "large_purchase": {
        "premium_travel_card": 0.3,
        "budgeting_tool": 0.3,
        "debt_consolidation_loan": 0.2,
    },
    "low_balance": {
        "overdraft_protection": 0.7,
        "budgeting_tool": 0.4,
        "high_yield_savings": -0.6,
        "premium_travel_card": -0.4,
        "mortgage_prequalification": -0.4,
    },
    "credit_score_change": {
        "debt_consolidation_loan": 0.3,
        "mortgage_prequalification": 0.3,
        "premium_travel_card": 0.2,
    },
    "loan_payoff": {
        "mortgage_prequalification": 0.3,
        "high_yield_savings": 0.3,
        "debt_consolidation_loan": -0.5,
    },
    "renewal_due": {"high_yield_savings": 0.5},
}


@dataclass(frozen=True, slots=True)
class ResponseModel:
    """The response model's tunable constants (defaults are the ground truth used in tests).

    Attributes:
        click_need_slope: log-odds of a click per unit of need.
        apply_need_slope: log-odds of an application per unit of need.
        tone_scale: `k_tone`, weight of the customer's tone affinity.
        message_scale: `k_msg`, weight of the message fit.
        fatigue_strength: `F` in `phi = exp(-F L)`.
        fatigue_hours: `tau`, the decay time of an exposure's fatigue.
        dismiss_intercept: log-odds of a dismissal at need 0.5 without fatigue.
        dismiss_mean_hours: mean delay of a dismissal.
        organic_scale: multiplies every offer's `organic_scale`.
        organic_mean_hours: mean delay of an organic conversion.
        approval_width: credit-score scale of the approval curve.
    """

    click_need_slope: float = 3.2
    apply_need_slope: float = 2.5
    tone_scale: float = 1.0
    message_scale: float = 1.0
    fatigue_strength: float = 0.4
    fatigue_hours: float = 96.0
    dismiss_intercept: float = -1.6
    dismiss_mean_hours: float = 0.05
    organic_scale: float = 1.0
    organic_mean_hours: float = 120.0
    approval_width: float = 35.0

    def __post_init__(self) -> None:
        for name in ("fatigue_hours", "dismiss_mean_hours", "organic_mean_hours", "approval_width"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.fatigue_strength < 0 or self.organic_scale < 0:
            raise ValueError("fatigue_strength and organic_scale must be non-negative")


DEFAULT_MODEL: Final = ResponseModel()


@dataclass(frozen=True, slots=True)
class Situation:
    """Everything a response depends on besides the arm.

    Attributes:
        customer: the customer's record on the day.
        trigger: why the app was opened (one of `TRIGGERS`).
        surface: where the offer is shown (one of `SURFACES`).
        time_seconds: seconds since the start of day 0 (the hour of day matters).
        exposures: per offer key, hours since each EARLIER exposure of that offer (the
            current decision is not included).
    """

    customer: Customer
    trigger: str = "app_open"
    surface: str = "home_feed"
    time_seconds: float = 0.0
    exposures: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.trigger not in TRIGGERS:
            raise ValueError(f"unknown trigger {self.trigger!r}")
        if self.surface not in SURFACES:
            raise ValueError(f"unknown surface {self.surface!r}")
        if not math.isfinite(self.time_seconds) or self.time_seconds < 0:
            raise ValueError("time_seconds must be finite and non-negative")
        for offer, ages in self.exposures.items():
            if offer not in OFFERS:
                raise UnknownArm(f"unknown offer {offer!r} in exposures")
            if any(not (math.isfinite(a) and a >= 0) for a in ages):
                raise ValueError("exposure ages must be finite and non-negative hours")

    def context(self) -> dict[str, dict[str, object]]:
        """The decision request's context for this situation."""
        return self.customer.context(self.trigger)

    @property
    def hour(self) -> float:
        """Hour of the day, in [0, 24)."""
        return (self.time_seconds % 86_400.0) / 3600.0


def parse_arm(arm: Arm | str) -> tuple[str | None, str | None]:
    """`(offer, variant)` of an arm or arm key (`offer/variant` or `no_offer`).

    Raises:
        UnknownArm: for an offer or variant the simulated bank does not have.
    """
    if isinstance(arm, Arm):
        offer, variant = arm.offer, arm.variant
    elif arm == NO_OFFER:
        offer, variant = None, None
    else:
        offer, sep, variant = arm.partition("/")
        if not sep:
            raise UnknownArm(f"arm key {arm!r} is neither 'offer/variant' nor {NO_OFFER!r}")
    if offer is None:
        if variant is not None:
            raise UnknownArm("the no-offer arm has no variant")
        return None, None
    spec = OFFERS.get(offer)
    if spec is None:
        raise UnknownArm(f"unknown offer {offer!r}")
    if variant is None:
        raise UnknownArm(f"arm of offer {offer!r} needs a variant")
    spec.tone(variant)
    return offer, variant


def arm_keys(offers: Sequence[str] = OFFER_KEYS, include_no_offer: bool = True) -> list[str]:
    """Arm keys of the given offers' variants (configuration order), then `no_offer`."""
    keys = [f"{o}/{v}" for o in offers for v, _ in OFFERS[o].variants]
    return [*keys, NO_OFFER] if include_no_offer else keys


# ---------------------------------------------------------------------------------------------
# Probabilities
# ---------------------------------------------------------------------------------------------


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def message_fit(offer: str, variant: str, situation: Situation) -> float:
    """`m_ov(s)`: how well a variant's message fits this customer and moment (log-odds).

    paycheck savings +0.35 on a pay-day trigger (else -0.05); rate savings +0.25 with a
    balance of 10,000 or more; lounge card +0.2 from age 35; fees card `0.4 n_travel - 0.1`;
    one-payment loan +0.25 when paying the minimum only; save-interest loan
    `0.3 n_debt - 0.05`; know-your-budget mortgage +0.2 under 40; dream-home mortgage +0.25
    with a family; no-fees overdraft +0.3 after any overdrawn day; peace-of-mind overdraft
    +0.2 with balance volatility above 0.4; insights budgeting +0.25 after a large purchase;
    alerts budgeting +0.35 on a low balance.
    """
    c = situation.customer
    needs = c.latent.needs
    trigger = situation.trigger
    fits: dict[tuple[str, str], float] = {
        ("high_yield_savings", "paycheck"): 0.35 if trigger == "paycheck_deposit" else -0.05,
        ("high_yield_savings", "rate"): 0.25 if c.cash_flow.balance >= 10_000 else 0.0,
        ("premium_travel_card", "lounge"): 0.2 if c.latent.age >= 35 else 0.0,
        ("premium_travel_card", "fees"): 0.4 * needs[1] - 0.1,
        ("debt_consolidation_loan", "one_payment"): 0.25 if c.cash_flow.pays_minimum_only else 0.0,
        ("debt_consolidation_loan", "save_interest"): 0.3 * needs[2] - 0.05,
        ("mortgage_prequalification", "know_budget"): 0.2 if c.latent.age < 40 else 0.0,
        ("mortgage_prequalification", "dream_home"): 0.25 if c.latent.family else 0.0,
        ("overdraft_protection", "no_fees"): 0.3 if c.cash_flow.days_overdrawn_90d > 0 else 0.0,
        ("overdraft_protection", "peace_of_mind"): 0.2 if c.cash_flow.volatility > 0.4 else 0.0,
        ("budgeting_tool", "insights"): 0.25 if trigger == "large_purchase" else 0.0,
        ("budgeting_tool", "alerts"): 0.35 if trigger == "low_balance" else 0.0,
    }
    return fits[(offer, variant)]


def _hour_effect(hour: float) -> float:
    if hour < 6.0:
        return -0.2
    if 18.0 <= hour < 22.0:
        return 0.1
    return 0.0


@dataclass(frozen=True, slots=True)
class ResponseProbabilities:
    """The law of the events after one decision.

    Attributes:
        offer: offer shown, None for no offer.
        variant: variant shown.
        click: P(click).
        dismiss: P(dismiss) (never together with a click).
        apply: P(apply | click).
        convert: P(convert | apply).
        stage_means_hours: mean delays of click, apply (after click), convert (after apply).
        dismiss_mean_hours: mean delay of a dismissal.
        organic: P(one organic conversion), whatever is shown.
        organic_offers: P(organic conversion is on each offer's product | organic), in
            `OFFER_KEYS` order.
        organic_mean_hours: mean delay of the organic conversion.
        fatigue_load: `L`, the summed decayed earlier exposures of the offer.
    """

    offer: str | None
    variant: str | None
    click: float
    dismiss: float
    apply: float
    convert: float
    stage_means_hours: tuple[float, float, float]
    dismiss_mean_hours: float
    organic: float
    organic_offers: tuple[float, ...]
    organic_mean_hours: float
    fatigue_load: float


def response_probabilities(
    situation: Situation, arm: Arm | str, *, model: ResponseModel = DEFAULT_MODEL
) -> ResponseProbabilities:
    """The known probabilities and delay means for showing `arm` in `situation`.

    Formulas in the module docstring.

    Raises:
        UnknownArm: for an unknown offer or variant.
    """
    offer, variant = parse_arm(arm)
    customer = situation.customer
    needs = customer.latent.needs
    rates = [OFFERS[o].organic_scale * model.organic_scale * needs[NEEDS.index(OFFERS[o].need)]
             for o in OFFER_KEYS]  # fmt: skip
    rates = [min(r, 1.0) for r in rates]
    no_organic = 1.0
    for r in rates:
        no_organic *= 1.0 - r
    total = sum(rates)
    organic_offers = (
        tuple(r / total for r in rates) if total > 0 else tuple(1.0 / len(rates) for _ in rates)
    )
    organic = 1.0 - no_organic
    if offer is None or variant is None:
        return ResponseProbabilities(
            offer=None,
            variant=None,
            click=0.0,
            dismiss=0.0,
            apply=0.0,
            convert=0.0,
            stage_means_hours=(1.0, 2.0, 3.0),
            dismiss_mean_hours=model.dismiss_mean_hours,
            organic=organic,
            organic_offers=organic_offers,
            organic_mean_hours=model.organic_mean_hours,
            fatigue_load=0.0,
        )
    spec = OFFERS[offer]
    need = needs[NEEDS.index(spec.need)]
    tone = spec.tone(variant)
    load = sum(math.exp(-age / model.fatigue_hours) for age in situation.exposures.get(offer, ()))
    click_logit = (
        spec.click_intercept
        + model.click_need_slope * need
        + model.tone_scale * customer.latent.tone_affinity[TONES.index(tone)]
        + model.message_scale * message_fit(offer, variant, situation)
        + SURFACE_EFFECTS[situation.surface].get(offer, 0.0)
        + TRIGGER_EFFECTS[situation.trigger].get(offer, 0.0)
        + _hour_effect(situation.hour)
    )
    click = _sigmoid(click_logit) * math.exp(-model.fatigue_strength * load)
    dismiss = (1.0 - click) * _sigmoid(model.dismiss_intercept + 1.5 * (0.5 - need) + 0.5 * load)
    apply = _sigmoid(spec.apply_intercept + model.apply_need_slope * need)
    convert = spec.convert_probability
    if spec.approval_pivot is not None:
        convert *= _sigmoid(
            (customer.latent.credit_score - spec.approval_pivot) / model.approval_width
        )
    return ResponseProbabilities(
        offer=offer,
        variant=variant,
        click=click,
        dismiss=dismiss,
        apply=apply,
        convert=convert,
        stage_means_hours=spec.stage_means_hours,
        dismiss_mean_hours=model.dismiss_mean_hours,
        organic=organic,
        organic_offers=organic_offers,
        organic_mean_hours=model.organic_mean_hours,
        fatigue_load=load,
    )


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutcomeEvent:
    """One event after a decision.

    Attributes:
        event: `click`, `apply`, `convert` or `dismiss`.
        delay_hours: hours after the decision.
        time_seconds: the decision's `time_seconds` plus the delay.
        value: the event's value (`EVENT_VALUE`).
        offer: the offer the event is about (for an organic conversion, the offer whose
            product the customer took up on their own).
        organic: True for an organic conversion (it happens whatever was shown).
    """

    event: str
    delay_hours: float
    time_seconds: float
    value: float
    offer: str | None
    organic: bool


#: Uniforms consumed per draw: branch, apply, convert, organic, organic product, then the
#: click, apply, convert, dismiss and organic delays.
UNIFORMS_PER_DRAW: Final = 10


@dataclass(frozen=True, eq=False)
class OutcomeDraws:
    """`size` independent draws of the events after one decision (arrays of length `size`).

    Times are hours after the decision; a stage's time is drawn even when the stage does not
    happen (so every draw consumes the same random numbers).
    """

    probabilities: ResponseProbabilities
    clicked: BoolArray
    dismissed: BoolArray
    applied: BoolArray
    converted: BoolArray
    organic: BoolArray
    organic_offer: IntArray
    click_hours: FloatArray
    apply_hours: FloatArray
    convert_hours: FloatArray
    dismiss_hours: FloatArray
    organic_hours: FloatArray

    def __len__(self) -> int:
        return int(self.clicked.shape[0])

    def events(self, index: int, time_seconds: float = 0.0) -> list[OutcomeEvent]:
        """The events of draw `index`, ordered by time."""
        offer = self.probabilities.offer
        found: list[tuple[str, float, str | None, bool]] = []
        if self.clicked[index]:
            found.append(("click", float(self.click_hours[index]), offer, False))
        if self.applied[index]:
            found.append(("apply", float(self.apply_hours[index]), offer, False))
        if self.converted[index]:
            found.append(("convert", float(self.convert_hours[index]), offer, False))
        if self.dismissed[index]:
            found.append(("dismiss", float(self.dismiss_hours[index]), offer, False))
        if self.organic[index]:
            organic_offer = OFFER_KEYS[int(self.organic_offer[index])]
            found.append(("convert", float(self.organic_hours[index]), organic_offer, True))
        found.sort(key=lambda e: e[1])
        return [
            OutcomeEvent(name, hours, time_seconds + hours * 3600.0, EVENT_VALUE, o, organic)
            for name, hours, o, organic in found
        ]


def draw_outcomes(
    rng: np.random.Generator, probabilities: ResponseProbabilities, size: int
) -> OutcomeDraws:
    """Draw `size` outcomes at once: `rng.random((size, 10))`, one row per draw.

    Row `[u0..u9]`: click if `u0 < p_c`, dismiss if `p_c <= u0 < p_c + p_d`; apply if
    clicked and `u1 < p_a`; convert if applied and `u2 < p_v`; organic if `u3 < p_o`, on the
    product where `u4` falls in the cumulative `organic_offers`; delays by inversion,
    `T = -mean ln(1 - u)`, with `T_apply = T_click + T2`, `T_convert = T_apply + T3`.
    Because each draw is one row, `size` single draws from the same generator give exactly
    the rows of one batch draw.
    """
    if size < 0:
        raise ValueError("size must be non-negative")
    p = probabilities
    u = rng.random((size, UNIFORMS_PER_DRAW))
    m_click, m_apply, m_convert = p.stage_means_hours
    clicked = u[:, 0] < p.click
    dismissed = ~clicked & (u[:, 0] < p.click + p.dismiss)
    applied = clicked & (u[:, 1] < p.apply)
    converted = applied & (u[:, 2] < p.convert)
    organic = u[:, 3] < p.organic
    cumulative = np.cumsum(np.asarray(p.organic_offers))
    organic_offer = np.minimum(
        (u[:, 4][:, None] >= cumulative[None, :]).sum(axis=1), len(OFFER_KEYS) - 1
    ).astype(np.int64)
    click_hours = -m_click * np.log1p(-u[:, 5])
    apply_hours = click_hours - m_apply * np.log1p(-u[:, 6])
    convert_hours = apply_hours - m_convert * np.log1p(-u[:, 7])
    dismiss_hours = -p.dismiss_mean_hours * np.log1p(-u[:, 8])
    organic_hours = -p.organic_mean_hours * np.log1p(-u[:, 9])
    return OutcomeDraws(
        probabilities=p,
        clicked=clicked,
        dismissed=dismissed,
        applied=applied,
        converted=converted,
        organic=organic,
        organic_offer=organic_offer,
        click_hours=click_hours,
        apply_hours=apply_hours,
        convert_hours=convert_hours,
        dismiss_hours=dismiss_hours,
        organic_hours=organic_hours,
    )


def sample_outcomes(
    rng: np.random.Generator,
    situation: Situation,
    arm: Arm | str,
    *,
    model: ResponseModel = DEFAULT_MODEL,
) -> list[OutcomeEvent]:
    """Draw the events after showing `arm` in `situation`, ordered by time.

    Consumes exactly `UNIFORMS_PER_DRAW` numbers from `rng` (see `draw_outcomes`).

    Raises:
        UnknownArm: for an unknown offer or variant.
    """
    draws = draw_outcomes(rng, response_probabilities(situation, arm, model=model), 1)
    return draws.events(0, situation.time_seconds)


# ---------------------------------------------------------------------------------------------
# Rewards
# ---------------------------------------------------------------------------------------------


def _aggregate(contributions: Sequence[float], horizon: RewardHorizon) -> float:
    if not contributions:
        return horizon.default_reward
    if horizon.aggregation == "sum":
        return float(sum(contributions))
    if horizon.aggregation == "max":
        return float(max(contributions))
    return float(contributions[0])


def realised_reward(events: Sequence[OutcomeEvent], horizon: RewardHorizon) -> float:
    """The reward of one decision's events, as the platform's reward join computes it.

    Events count when their name has a weight and `0 <= delay <= window`; each contributes
    `weight x value`; `sum` adds, `max` takes the largest, `earliest` the first in time;
    with none, `default_reward`.
    """
    window = horizon.attribution_window_hours
    counted = sorted(
        (e for e in events if e.event in horizon.event_weights and 0 <= e.delay_hours <= window),
        key=lambda e: e.delay_hours,
    )
    return _aggregate([horizon.event_weights[e.event] * e.value for e in counted], horizon)


def realised_rewards(draws: OutcomeDraws, horizon: RewardHorizon) -> FloatArray:
    """`realised_reward` of every draw at once (vectorised)."""
    window = horizon.attribution_window_hours
    weights = horizon.event_weights
    columns: list[tuple[BoolArray, FloatArray, float]] = []
    candidates = (
        ("click", draws.clicked, draws.click_hours),
        ("apply", draws.applied, draws.apply_hours),
        ("convert", draws.converted, draws.convert_hours),
        ("dismiss", draws.dismissed, draws.dismiss_hours),
        ("convert", draws.organic, draws.organic_hours),
    )
    for name, happened, hours in candidates:
        if name in weights:
            columns.append((happened & (hours <= window), hours, weights[name] * EVENT_VALUE))
    size = len(draws)
    if not columns:
        return np.full(size, horizon.default_reward)
    present = np.column_stack([c[0] for c in columns])
    values = np.asarray([c[2] for c in columns])
    any_present = present.any(axis=1)
    if horizon.aggregation == "sum":
        result = (present * values[None, :]).sum(axis=1)
    elif horizon.aggregation == "max":
        result = np.where(present, values[None, :], -np.inf).max(axis=1)
    else:
        times = np.where(present, np.column_stack([c[1] for c in columns]), np.inf)
        result = values[np.argmin(times, axis=1)]
    final: FloatArray = np.where(any_present, result, horizon.default_reward)
    return final


def _hypo_terms(rates: Sequence[float]) -> list[float]:
    # Partial-fraction weights A_i = prod_{j != i} l_j / (l_j - l_i) of the hypoexponential
    # density f(t) = sum_i A_i l_i exp(-l_i t) (distinct rates).
    weights = []
    for i, li in enumerate(rates):
        weight = 1.0
        for j, lj in enumerate(rates):
            if j != i:
                if lj == li:
                    raise ValueError("hypoexponential stage rates must differ")
                weight *= lj / (lj - li)
        weights.append(weight)
    return weights


def hypoexponential_cdf(rates: Sequence[float], t: float) -> float:
    """P(X_1 + ... + X_k <= t) for independent `X_i ~ Exp(rate l_i)`, distinct rates.

    `F(t) = 1 - sum_i A_i exp(-l_i t)`, `A_i = prod_{j != i} l_j / (l_j - l_i)`.
    """
    return discounted_hypoexponential_cdf(rates, 0.0, t)


def discounted_hypoexponential_cdf(rates: Sequence[float], r: float, t: float) -> float:
    """`int_0^t f(s) exp(-r s) ds` for the hypoexponential density `f`.

    `= sum_i A_i l_i / (l_i + r) (1 - exp(-(l_i + r) t))`; at `r = 0` it is the CDF. With
    `r` the rate of an independent exponential `Y`, it is `P(X <= t, X < Y)`.
    """
    if t <= 0:
        return 0.0
    weights = _hypo_terms(rates)
    value = sum(
        a * li / (li + r) * -math.expm1(-(li + r) * t) for a, li in zip(weights, rates, strict=True)
    )
    return min(max(value, 0.0), 1.0)


def expected_reward(
    situation: Situation,
    arm: Arm | str,
    horizon: RewardHorizon,
    *,
    model: ResponseModel = DEFAULT_MODEL,
) -> float:
    """The exact expected reward of showing `arm` in `situation`, for one reward horizon.

    See `expected_reward_from` for the formulas.

    Raises:
        UnknownArm: for an unknown offer or variant.
    """
    return expected_reward_from(response_probabilities(situation, arm, model=model), horizon)


def expected_reward_from(p: ResponseProbabilities, horizon: RewardHorizon) -> float:
    """The exact expected reward of the events drawn from `p`, for one reward horizon.

    Window `w`; `F_k` the CDF of the time of funnel stage `k` (hypoexponential over the
    first `k` stage rates); `pi_k = p_c p_a ... ` the probability of reaching stage `k`;
    `F_d`, `F_o` the dismissal and organic CDFs; `P_O = p_o F_o(w)`; contributions `c_e =
    weight_e x value` for weighted events; `chi = [convert is weighted]` (only then does the
    organic conversion count).

    `sum` and `max` depend only on which events fall inside the window. The funnel leaves
    exactly one of: nothing, a dismissal (`p_d F_d(w)`), or clicks reaching depth exactly `k`
    (`pi_k F_k(w) - pi_{k+1} F_{k+1}(w)`); the organic conversion is independent
    (`P_O`). The expectation sums, over these 5 x 2 patterns, probability x (sum or max of
    the contributions present, or the default when none is).

    `earliest` takes the first weighted event. The funnel's first weighted event is a
    dismissal (prob `p_d`, rate `l_d`) or the first weighted click stage `k*` (prob
    `pi_k*`, rates `l_1..l_k*`); call them branches `b` with CDFs `F_b`. With `G_b =
    int_0^w f_b(s) e^{-l_o s} ds` (closed form, `discounted_hypoexponential_cdf`) and
    `M_b = int_0^w f_o(t) F_b(t) dt = F_o(w) - sum_i A_i l_o / (l_i + l_o) (1 - e^{-(l_i +
    l_o) w})`:

        E = sum_b c_b P_b [(1 - chi p_o) F_b(w) + chi p_o G_b]
            + chi c_convert p_o [F_o(w) - sum_b P_b M_b]
            + default (1 - sum_b P_b F_b(w)) (1 - chi P_O).
    """
    window = horizon.attribution_window_hours
    weights = horizon.event_weights
    contribution: dict[str, float] = {e: weights[e] * EVENT_VALUE for e in EVENTS if e in weights}
    chi = "convert" in contribution
    stage_rates = [1.0 / m for m in p.stage_means_hours]
    dismiss_rate = 1.0 / p.dismiss_mean_hours
    organic_rate = 1.0 / p.organic_mean_hours
    organic_cdf = -math.expm1(-organic_rate * window)
    reach = [1.0, p.click, p.click * p.apply, p.click * p.apply * p.convert]
    stages = ("click", "apply", "convert")

    if horizon.aggregation in ("sum", "max"):
        in_window = [1.0] + [
            reach[k] * hypoexponential_cdf(stage_rates[:k], window) if reach[k] > 0 else 0.0
            for k in (1, 2, 3)
        ]
        dismissed = p.dismiss * -math.expm1(-dismiss_rate * window)
        patterns: list[tuple[float, list[float]]] = [
            (dismissed, [contribution["dismiss"]] if "dismiss" in contribution else [])
        ]
        for depth in (1, 2, 3):
            exactly = in_window[depth] - (in_window[depth + 1] if depth < 3 else 0.0)
            present = [contribution[s] for s in stages[:depth] if s in contribution]
            patterns.append((exactly, present))
        patterns.append((max(1.0 - in_window[1] - dismissed, 0.0), []))
        organic_in = p.organic * organic_cdf if chi else 0.0
        total = 0.0
        for probability, present in patterns:
            if probability <= 0.0:
                continue
            for organic_prob, extra in ((1.0 - organic_in, []), (organic_in, ["convert"])):
                if organic_prob <= 0.0:
                    continue
                values = present + [contribution[e] for e in extra]
                total += probability * organic_prob * _aggregate(values, horizon)
        return total

    # earliest
    branches: list[tuple[float, float, list[float]]] = []  # (prob, contribution, rates)
    if "dismiss" in contribution and p.dismiss > 0:
        branches.append((p.dismiss, contribution["dismiss"], [dismiss_rate]))
    first = next((k for k, s in enumerate(stages, start=1) if s in contribution), None)
    if first is not None and reach[first] > 0:
        branches.append((reach[first], contribution[stages[first - 1]], stage_rates[:first]))
    po = p.organic if chi else 0.0
    total = 0.0
    funnel_in = 0.0
    organic_blocked = 0.0
    for prob, value, rates in branches:
        cdf = hypoexponential_cdf(rates, window)
        funnel_in += prob * cdf
        if po > 0:
            g = discounted_hypoexponential_cdf(rates, organic_rate, window)
            m = organic_cdf - sum(
                a * organic_rate / (li + organic_rate) * -math.expm1(-(li + organic_rate) * window)
                for a, li in zip(_hypo_terms(rates), rates, strict=True)
            )
            organic_blocked += prob * m
            total += value * prob * ((1.0 - po) * cdf + po * g)
        else:
            total += value * prob * cdf
    if po > 0:
        total += contribution["convert"] * po * (organic_cdf - organic_blocked)
    total += horizon.default_reward * (1.0 - funnel_in) * (1.0 - po * organic_cdf)
    return total
