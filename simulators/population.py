"""A seeded population of synthetic bank customers with known, hidden needs.

Every customer belongs to one latent segment (student, young professional, high-balance saver,
revolving borrower, homeowner, aspiring home-buyer, frequent international spender,
paycheck-to-paycheck, retiree). The segment is drawn from a fixed mixture and is never part of
the decision context: a policy only sees the observable signals it generates.

Generative story, per customer `i` (all draws from one `numpy.random.Generator`):

* segment `g_i ~ Categorical(SEGMENT_WEIGHTS)`;
* age, monthly income (log-normal around the segment's median), credit score, tenure,
  region, family flag, products held, device, pay schedule and protected attributes from
  segment-specific distributions;
* six latent needs `n_ij in [0, 1]` (savings, travel, debt consolidation, home buying,
  overdraft protection, budgeting help), `n_ij ~ Beta(m_gj * k, (1 - m_gj) * k)` with segment
  means `m_gj` and concentration `k = 8`; a held product damps the matching need
  (`n <- n * d`, for example a mortgage holder's home-buying need by `d = 0.15`);
* tone affinities (the log-odds a customer adds to a message of each tone), thrift, cash
  buffer and engagement.

Observable signals (`Customer.profile`, `.cash_flow`, `.behavior`) are functions of the latent
state plus noise. The noise of customer `i` on day `t` is a counter-based hash of
`(seed, i, period, stream)` (SplitMix64), so one customer's signals on one day can be computed
alone, in any order, and agree bit for bit with a whole-population batch.

`Customer.context(trigger)` is the decision request's `context`, with exactly the field names,
types and category values of the demo experiment's `context_fields`; protected attributes are
kept apart (`Customer.protected()`) for fairness audits only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
U64Array = npt.NDArray[np.uint64]

# ---------------------------------------------------------------------------------------------
# Vocabulary (the demo experiment's category values, in its order)
# ---------------------------------------------------------------------------------------------

NEEDS: Final = (
    "savings",
    "travel",
    "debt_consolidation",
    "home_buying",
    "overdraft_protection",
    "budgeting_help",
)
SAVINGS, TRAVEL, DEBT, HOME, OVERDRAFT, BUDGETING = range(6)

SEGMENTS: Final = (
    "student",
    "young_professional",
    "high_balance_saver",
    "revolving_borrower",
    "homeowner",
    "aspiring_homebuyer",
    "frequent_international_spender",
    "paycheck_to_paycheck",
    "retiree",
)
(
    STUDENT,
    YOUNG_PROFESSIONAL,
    SAVER,
    REVOLVER,
    HOMEOWNER,
    ASPIRING,
    INTERNATIONAL,
    PAYCHECK,
    RETIREE,
) = range(9)

TONES: Final = ("neutral", "warm", "urgent", "informative", "playful")
AGE_BANDS: Final = ("18_24", "25_34", "35_44", "45_54", "55_64", "65_plus")
INCOME_BANDS: Final = ("low", "lower_middle", "middle", "upper_middle", "high")
REGIONS: Final = ("north", "south", "east", "west", "capital")
PRODUCTS: Final = (
    "checking",
    "savings",
    "credit_card",
    "premium_card",
    "mortgage",
    "personal_loan",
    "investment",
    "overdraft_protection",
)
P_CHECKING, P_SAVINGS, P_CARD, P_PREMIUM, P_MORTGAGE, P_LOAN, P_INVEST, P_OVERDRAFT = range(8)
LIFE_STAGES: Final = (
    "student",
    "young_professional",
    "family",
    "established",
    "pre_retirement",
    "retired",
)
CREDIT_BANDS: Final = ("poor", "fair", "good", "very_good", "excellent")
PAGES: Final = (
    "mortgage_calculator",
    "travel",
    "savings_rates",
    "loans",
    "budgeting",
    "cards",
    "investments",
)
DEVICES: Final = ("ios", "android", "web")
TRIGGERS: Final = (
    "app_open",
    "paycheck_deposit",
    "large_purchase",
    "low_balance",
    "credit_score_change",
    "loan_payoff",
    "renewal_due",
)
GENDERS: Final = ("female", "male", "non_binary")
ETHNICITIES: Final = ("white", "black", "asian", "hispanic", "mixed", "other")
MARITAL_STATUSES: Final = ("single", "married", "divorced", "widowed")

#: Day 0 of the default calendar (a Thursday).
DEFAULT_START: Final = date(2026, 1, 1)

#: Upper edges of the age bands (years), annual income bands and credit-score bands.
AGE_EDGES: Final = (25.0, 35.0, 45.0, 55.0, 65.0)
INCOME_EDGES: Final = (20_000.0, 35_000.0, 60_000.0, 100_000.0)
CREDIT_EDGES: Final = (580.0, 670.0, 740.0, 800.0)

#: A held product damps the need it serves: (need, product, factor).
HOLDING_DAMPING: Final = (
    (SAVINGS, P_SAVINGS, 0.5),
    (TRAVEL, P_PREMIUM, 0.25),
    (DEBT, P_LOAN, 0.3),
    (HOME, P_MORTGAGE, 0.15),
    (OVERDRAFT, P_OVERDRAFT, 0.2),
)

# ---------------------------------------------------------------------------------------------
# Segment table
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SegmentSpec:
    """The distributions one latent segment draws its customers from.

    Attributes:
        name: segment label (ground truth, never in a context).
        weight: mixture weight.
        age: mean and standard deviation of age in years (truncated to 18-92).
        income: median monthly income; income is log-normal with sigma 0.35.
        credit: mean credit score (sd 45, clipped to 300-850).
        buffer_months: median cash buffer in months of income (log-normal, sigma 0.5).
        thrift: mean share-of-income saving propensity in [0, 1].
        needs: Beta means of the six needs, in `NEEDS` order.
        tones: mean tone affinities (log-odds), in `TONES` order.
        products: probability of holding each product, in `PRODUCTS` order.
        family: probability of the family flag (children at home).
        engagement: mean app opens per day.
        capital: probability of living in the capital region.
    """

    name: str
    weight: float
    age: tuple[float, float]
    income: float
    credit: float
    buffer_months: float
    thrift: float
    needs: tuple[float, float, float, float, float, float]
    tones: tuple[float, float, float, float, float]
    products: tuple[float, float, float, float, float, float, float, float]
    family: float
    engagement: float
    capital: float


SEGMENT_SPECS: Final = (
    SegmentSpec(
        "student", 0.09, (21.0, 2.0), 900.0, 640.0, 0.6, 0.15,
        (0.15, 0.25, 0.10, 0.03, 0.35, 0.45), (0.0, 0.1, 0.0, -0.1, 0.3),
        (0.97, 0.30, 0.30, 0.00, 0.00, 0.05, 0.02, 0.05), 0.0, 0.50, 0.30,
    ),
    SegmentSpec(
        "young_professional", 0.17, (29.0, 4.0), 4200.0, 700.0, 1.2, 0.40,
        (0.40, 0.35, 0.15, 0.20, 0.15, 0.30), (0.0, 0.0, -0.1, 0.1, 0.15),
        (0.97, 0.50, 0.60, 0.05, 0.05, 0.10, 0.15, 0.10), 0.15, 0.45, 0.35,
    ),
    SegmentSpec(
        "high_balance_saver", 0.11, (52.0, 12.0), 6500.0, 780.0, 8.0, 0.75,
        (0.65, 0.25, 0.03, 0.15, 0.03, 0.10), (0.0, 0.0, -0.3, 0.3, -0.3),
        (0.97, 0.90, 0.50, 0.20, 0.25, 0.02, 0.60, 0.05), 0.30, 0.25, 0.20,
    ),
    SegmentSpec(
        "revolving_borrower", 0.13, (38.0, 10.0), 3300.0, 620.0, 0.5, 0.10,
        (0.10, 0.10, 0.60, 0.05, 0.30, 0.35), (0.0, 0.0, 0.2, 0.1, -0.1),
        (0.97, 0.20, 0.95, 0.02, 0.20, 0.30, 0.05, 0.15), 0.45, 0.35, 0.20,
    ),
    SegmentSpec(
        "homeowner", 0.16, (45.0, 9.0), 5200.0, 740.0, 1.5, 0.40,
        (0.30, 0.20, 0.15, 0.10, 0.10, 0.25), (0.0, 0.2, -0.2, 0.1, 0.0),
        (0.97, 0.60, 0.70, 0.10, 1.00, 0.15, 0.30, 0.15), 0.70, 0.30, 0.15,
    ),
    SegmentSpec(
        "aspiring_homebuyer", 0.07, (33.0, 5.0), 4800.0, 720.0, 3.0, 0.55,
        (0.35, 0.15, 0.10, 0.60, 0.10, 0.25), (0.0, 0.3, 0.0, 0.1, 0.0),
        (0.97, 0.70, 0.60, 0.05, 0.00, 0.05, 0.20, 0.10), 0.50, 0.40, 0.30,
    ),
    SegmentSpec(
        "frequent_international_spender", 0.08, (40.0, 10.0), 7500.0, 750.0, 2.5, 0.45,
        (0.30, 0.70, 0.10, 0.10, 0.05, 0.10), (0.0, 0.2, 0.0, 0.1, 0.0),
        (0.97, 0.60, 0.80, 0.25, 0.30, 0.05, 0.40, 0.10), 0.30, 0.35, 0.45,
    ),
    SegmentSpec(
        "paycheck_to_paycheck", 0.10, (34.0, 11.0), 2100.0, 590.0, 0.15, 0.05,
        (0.05, 0.05, 0.25, 0.02, 0.65, 0.50), (0.0, 0.2, -0.2, 0.0, 0.1),
        (0.97, 0.10, 0.50, 0.00, 0.05, 0.20, 0.02, 0.20), 0.40, 0.55, 0.20,
    ),
    SegmentSpec(
        "retiree", 0.09, (71.0, 6.0), 2400.0, 760.0, 4.0, 0.50,
        (0.35, 0.25, 0.05, 0.02, 0.05, 0.15), (0.0, 0.1, -0.3, 0.3, -0.3),
        (0.97, 0.70, 0.50, 0.10, 0.20, 0.02, 0.40, 0.10), 0.10, 0.15, 0.15,
    ),
)  # fmt: skip

SEGMENT_WEIGHTS: Final = tuple(s.weight for s in SEGMENT_SPECS)

_NEED_CONCENTRATION = 8.0
_REGION_BASE = (0.22, 0.22, 0.18, 0.18, 0.20)
_ETHNICITY_BY_REGION = (
    (0.62, 0.10, 0.12, 0.09, 0.04, 0.03),  # outside the capital
    (0.40, 0.18, 0.20, 0.12, 0.06, 0.04),  # capital
)

# ---------------------------------------------------------------------------------------------
# Counter-based noise: the same (seed, customer, period, stream) always gives the same number
# ---------------------------------------------------------------------------------------------

_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix(x: U64Array) -> U64Array:
    # SplitMix64 finaliser; uint64 array arithmetic wraps modulo 2**64 without a warning.
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


def hash_uniform(key: int, ids: IntArray, period: int, stream: int) -> FloatArray:
    """Uniform numbers in [0, 1) that depend only on `(key, id, period, stream)`.

    `u = (h >> 11) * 2**-53` with `h` three SplitMix64 rounds over the inputs.

    Args:
        key: a 64-bit key derived from the seed.
        ids: customer ids.
        period: the day, week or month the number belongs to (non-negative).
        stream: which signal the number is for (non-negative).
    """
    if period < 0 or stream < 0:
        raise ValueError("period and stream must be non-negative")
    x = ids.astype(np.uint64) * _GOLDEN + np.uint64(key)
    x = _splitmix(x)
    x = _splitmix(x ^ np.uint64(period))
    # The stream offset is computed with Python integers (no scalar overflow warning).
    x = _splitmix(x + np.uint64((stream * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF))
    result: FloatArray = (x >> np.uint64(11)).astype(np.float64) * (2.0**-53)
    return result


def hash_normal(key: int, ids: IntArray, period: int, stream: int) -> FloatArray:
    """Standard normal numbers from two hashed uniforms (Box-Muller).

    `z = sqrt(-2 ln(1 - u1)) cos(2 pi u2)` with `u1`, `u2` from streams `2s` and `2s + 1`.
    """
    u1 = hash_uniform(key, ids, period, 2 * stream)
    u2 = hash_uniform(key, ids, period, 2 * stream + 1)
    result: FloatArray = np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
    return result


def seed_key(seed: int, stream: int) -> int:
    """A 64-bit hash key for `seed` and a named stream."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1, np.uint64)[0])


# Noise streams (one per signal); the numbers only need to be distinct.
(
    _S_SALARY,
    _S_BILLS,
    _S_SUBS,
    _S_TRAVEL,
    _S_DINING,
    _S_SAVRATE,
    _S_BALANCE,
    _S_SHORTFALL,
    _S_VOLATILITY,
    _S_OVERDRAWN,
    _S_REVOLVING,
    _S_MINIMUM,
    _S_ABANDON,
    _S_SESSION,
    _S_DISMISSED,
    _S_PAGES,
) = range(16)

# ---------------------------------------------------------------------------------------------
# The customer record
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Profile:
    """Profile signals (`profile.*` in the context)."""

    age_band: str
    income_band: str
    region: str
    products_held: tuple[str, ...]
    tenure_years: float
    life_stage: str
    credit_score_band: str


@dataclass(frozen=True, slots=True)
class CashFlow:
    """Transaction and cash-flow signals (`cash_flow.*` in the context)."""

    salary_deposit_monthly: float
    balance: float
    savings_rate: float
    volatility: float
    days_overdrawn_90d: int
    bills_monthly: float
    subscriptions_count: int
    travel_spend_monthly: float
    dining_spend_monthly: float
    revolving_balance: float
    pays_minimum_only: bool


@dataclass(frozen=True, slots=True)
class Behavior:
    """Digital-behaviour signals (`behavior.*` in the context)."""

    pages_viewed_7d: tuple[str, ...]
    abandoned_application: bool
    device: str
    session_minutes: float
    offers_dismissed_30d: int


@dataclass(frozen=True, slots=True)
class Protected:
    """Protected attributes: for fairness audits only, never in a context or a policy."""

    gender: str
    ethnicity: str
    marital_status: str


@dataclass(frozen=True, slots=True)
class Latent:
    """The hidden ground truth behind a customer's signals (never in a context).

    Attributes:
        segment: the latent segment the customer was drawn from.
        needs: need intensities in [0, 1], in `NEEDS` order.
        tone_affinity: log-odds added to a message of each tone, in `TONES` order.
        credit_score: numeric credit score (the context only has its band).
        monthly_income: monthly income (before noise in the salary signal).
        age: age in years.
        family: children at home.
        engagement: expected plain app opens per day.
    """

    segment: str
    needs: tuple[float, ...]
    tone_affinity: tuple[float, ...]
    credit_score: float
    monthly_income: float
    age: float
    family: bool
    engagement: float

    def need(self, name: str) -> float:
        """The intensity of one need, by name (one of `NEEDS`)."""
        return self.needs[NEEDS.index(name)]


@dataclass(frozen=True, slots=True)
class Customer:
    """One customer on one day: observable signals, protected attributes and latent truth."""

    customer_id: int
    day: int
    profile: Profile
    cash_flow: CashFlow
    behavior: Behavior
    protected_attributes: Protected
    latent: Latent

    def context(self, trigger: str = "app_open") -> dict[str, dict[str, object]]:
        """The decision request's `context`, without protected attributes.

        Field names, types and category values are exactly the demo experiment's
        `context_fields`; lists are fresh copies.

        Raises:
            ValueError: for a trigger that is not one of `TRIGGERS`.
        """
        if trigger not in TRIGGERS:
            raise ValueError(f"unknown trigger {trigger!r}; expected one of {TRIGGERS}")
        p, c, b = self.profile, self.cash_flow, self.behavior
        return {
            "profile": {
                "age_band": p.age_band,
                "income_band": p.income_band,
                "region": p.region,
                "products_held": list(p.products_held),
                "tenure_years": p.tenure_years,
                "life_stage": p.life_stage,
                "credit_score_band": p.credit_score_band,
            },
            "cash_flow": {
                "salary_deposit_monthly": c.salary_deposit_monthly,
                "balance": c.balance,
                "savings_rate": c.savings_rate,
                "volatility": c.volatility,
                "days_overdrawn_90d": c.days_overdrawn_90d,
                "bills_monthly": c.bills_monthly,
                "subscriptions_count": c.subscriptions_count,
                "travel_spend_monthly": c.travel_spend_monthly,
                "dining_spend_monthly": c.dining_spend_monthly,
                "revolving_balance": c.revolving_balance,
                "pays_minimum_only": c.pays_minimum_only,
            },
            "behavior": {
                "pages_viewed_7d": list(b.pages_viewed_7d),
                "abandoned_application": b.abandoned_application,
                "device": b.device,
                "session_minutes": b.session_minutes,
                "offers_dismissed_30d": b.offers_dismissed_30d,
            },
            "trigger": {"event": trigger},
        }

    def flat_context(self, trigger: str = "app_open") -> dict[str, object]:
        """The context flattened to `section.name -> value`, as eligibility rules read it."""
        return {
            f"{section}.{name}": value
            for section, fields in self.context(trigger).items()
            for name, value in fields.items()
        }

    def protected(self) -> dict[str, str]:
        """Protected attributes by name (`gender`, `ethnicity`, `marital_status`).

        In an experiment configuration they are `profile.<name>`; they are never part of
        `context()`.
        """
        a = self.protected_attributes
        return {"gender": a.gender, "ethnicity": a.ethnicity, "marital_status": a.marital_status}


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------


def _categorical_rows(rng: np.random.Generator, probabilities: FloatArray) -> IntArray:
    """One categorical draw per row of `probabilities` (rows sum to 1), by inverse CDF."""
    cumulative = np.cumsum(probabilities, axis=1)
    u: FloatArray = rng.random((probabilities.shape[0],))
    index = (u[:, None] >= cumulative).sum(axis=1)
    result: IntArray = np.minimum(index, probabilities.shape[1] - 1).astype(np.int64)
    return result


def dampen_needs(needs: FloatArray, products: BoolArray) -> FloatArray:
    """Apply `HOLDING_DAMPING`: `n_j <- n_j * d` when the product serving need `j` is held.

    A customer with no card has less card debt to consolidate: `n_debt <- 0.5 n_debt`.
    """
    result = needs.copy()
    for need, product, factor in HOLDING_DAMPING:
        result[:, need] = np.where(products[:, product], result[:, need] * factor, result[:, need])
    no_card = ~(products[:, P_CARD] | products[:, P_PREMIUM])
    result[:, DEBT] = np.where(no_card, result[:, DEBT] * 0.5, result[:, DEBT])
    return result


@dataclass(frozen=True, eq=False)
class DayLatent:
    """The latent state of some customers on one day (arrays aligned with `ids`).

    Built by `Population.baseline_latent` (day 0, no world dynamics) or by the `World`.
    """

    ids: IntArray
    day: int
    needs: FloatArray
    income: FloatArray
    credit: FloatArray
    age: FloatArray
    region: IntArray
    products: BoolArray
    life_stage: IntArray
    days_since_pay: IntArray


@dataclass(frozen=True, eq=False)
class Population:
    """A generated population: one array per static trait, indexed by customer id.

    Build it with `Population.generate(size, seed)`. The arrays are ground truth; the
    `segment` codes index `SEGMENTS` and must never reach a policy.
    """

    seed: int
    hash_key: int
    segment: IntArray
    age0: FloatArray
    income0: FloatArray
    credit0: FloatArray
    tenure0: FloatArray
    region0: IntArray
    family: BoolArray
    products0: BoolArray
    base_needs: FloatArray
    tone_affinity: FloatArray
    thrift: FloatArray
    buffer_months: FloatArray
    bill_share: FloatArray
    subscriptions_base: FloatArray
    engagement: FloatArray
    session_habit: FloatArray
    preferred_hour: FloatArray
    device: IntArray
    pay_day_of_month: IntArray
    biweekly: BoolArray
    pay_phase: IntArray
    gender: IntArray
    ethnicity: IntArray
    marital: IntArray

    @classmethod
    def generate(cls, size: int, seed: int) -> Population:
        """Draw `size` customers from the segment mixture, reproducibly for `seed`.

        Raises:
            ValueError: for a negative size or seed.
        """
        if size < 0:
            raise ValueError("size must be non-negative")
        if seed < 0:
            raise ValueError("seed must be non-negative")
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
        n = size
        specs = SEGMENT_SPECS
        segment = rng.choice(
            len(specs), size=n, p=np.asarray(SEGMENT_WEIGHTS) / sum(SEGMENT_WEIGHTS)
        )
        segment = segment.astype(np.int64)

        def column(values: Sequence[float]) -> FloatArray:
            table: FloatArray = np.asarray(values, dtype=np.float64)
            return table[segment]

        age_mean = column([s.age[0] for s in specs])
        age_sd = column([s.age[1] for s in specs])
        age0 = np.clip(age_mean + age_sd * rng.standard_normal(n), 18.0, 92.0)
        income0 = column([s.income for s in specs]) * np.exp(0.35 * rng.standard_normal(n))
        credit0 = np.clip(
            column([s.credit for s in specs]) + 45.0 * rng.standard_normal(n), 300, 850
        )
        tenure0 = rng.random(n) * np.minimum(age0 - 18.0, 30.0)
        capital = column([s.capital for s in specs])
        other = (1.0 - capital) / (1.0 - _REGION_BASE[4])
        region_p = np.column_stack([*(other * b for b in _REGION_BASE[:4]), capital])
        region0 = _categorical_rows(rng, region_p)
        family = rng.random(n) < column([s.family for s in specs])
        product_p = np.asarray([s.products for s in specs], dtype=np.float64)[segment]
        products0 = rng.random((n, len(PRODUCTS))) < product_p
        need_mean = np.asarray([s.needs for s in specs], dtype=np.float64)[segment]
        base_needs = rng.beta(
            need_mean * _NEED_CONCENTRATION, (1 - need_mean) * _NEED_CONCENTRATION
        )
        tone_mean = np.asarray([s.tones for s in specs], dtype=np.float64)[segment]
        tone_affinity = tone_mean + 0.1 * rng.standard_normal((n, len(TONES)))
        thrift = np.clip(column([s.thrift for s in specs]) + 0.1 * rng.standard_normal(n), 0, 1)
        buffer_months = column([s.buffer_months for s in specs]) * np.exp(
            0.5 * rng.standard_normal(n)
        )
        bill_share = np.clip(0.35 + 0.07 * rng.standard_normal(n), 0.15, 0.6)
        subscriptions_base = np.clip(6.0 - 0.06 * age0 + 1.5 * rng.standard_normal(n), 0, 15)
        engagement = column([s.engagement for s in specs]) * np.exp(
            0.4 * rng.standard_normal(n) - 0.08
        )
        session_habit = np.clip(2.0 + 6.0 * rng.random(n), 0.5, None)
        morning = rng.random(n) < np.where(segment == RETIREE, 0.8, 0.35)
        preferred_hour = (
            np.where(
                morning, 8.5 + 1.5 * rng.standard_normal(n), 20.0 + 2.0 * rng.standard_normal(n)
            )
            % 24.0
        )
        device_p = np.where(
            (age0 < 35)[:, None],
            np.asarray([[0.55, 0.40, 0.05]]),
            np.where(
                (age0 < 60)[:, None],
                np.asarray([[0.45, 0.40, 0.15]]),
                np.asarray([[0.30, 0.30, 0.40]]),
            ),
        )
        device = _categorical_rows(rng, device_p)
        pay_day_of_month = rng.choice(np.asarray([1, 15, 25, 28]), size=n, p=[0.3, 0.2, 0.3, 0.2])
        biweekly = (rng.random(n) < 0.2) & (segment != RETIREE) & (segment != STUDENT)
        pay_phase = rng.integers(0, 14, size=n)
        gender = rng.choice(len(GENDERS), size=n, p=[0.49, 0.49, 0.02]).astype(np.int64)
        ethnicity_p = np.asarray(_ETHNICITY_BY_REGION, dtype=np.float64)[
            (region0 == 4).astype(np.int64)
        ]
        ethnicity = _categorical_rows(rng, ethnicity_p)
        marital_p = np.where(
            family[:, None],
            np.asarray([[0.15, 0.75, 0.10, 0.0]]),
            np.where(
                (age0 < 30)[:, None],
                np.asarray([[0.85, 0.12, 0.03, 0.0]]),
                np.where(
                    (age0 < 65)[:, None],
                    np.asarray([[0.40, 0.40, 0.17, 0.03]]),
                    np.asarray([[0.15, 0.50, 0.15, 0.20]]),
                ),
            ),
        )
        marital = _categorical_rows(rng, marital_p)
        return cls(
            seed=seed,
            hash_key=seed_key(seed, 1),
            segment=segment,
            age0=age0,
            income0=income0,
            credit0=credit0,
            tenure0=tenure0,
            region0=region0,
            family=family,
            products0=products0,
            base_needs=base_needs,
            tone_affinity=tone_affinity,
            thrift=thrift,
            buffer_months=buffer_months,
            bill_share=bill_share,
            subscriptions_base=subscriptions_base,
            engagement=engagement,
            session_habit=session_habit,
            preferred_hour=preferred_hour,
            device=device,
            pay_day_of_month=pay_day_of_month.astype(np.int64),
            biweekly=biweekly,
            pay_phase=pay_phase.astype(np.int64),
            gender=gender,
            ethnicity=ethnicity,
            marital=marital,
        )

    def __len__(self) -> int:
        return int(self.segment.shape[0])

    def ids(self, customer_ids: Sequence[int] | IntArray | None = None) -> IntArray:
        """Customer ids as an array, all of them when `customer_ids` is None.

        Raises:
            IndexError: for an id outside the population.
        """
        if customer_ids is None:
            return np.arange(len(self), dtype=np.int64)
        ids = np.asarray(customer_ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise IndexError("customer id outside the population")
        return ids

    def life_stage(self, ids: IntArray, age: FloatArray, employed_student: BoolArray) -> IntArray:
        """Life stage codes (index into `LIFE_STAGES`) from segment, age and family.

        student (a student without a job) > retired (retiree segment or age >= 67) >
        pre_retirement (age >= 57) > family > young_professional (age < 36) > established.
        """
        segment = self.segment[ids]
        stage = np.full(ids.shape, 3, dtype=np.int64)  # established
        stage = np.where(age < 36, 1, stage)
        stage = np.where(self.family[ids], 2, stage)
        stage = np.where(age >= 57, 4, stage)
        stage = np.where((segment == RETIREE) | (age >= 67), 5, stage)
        stage = np.where((segment == STUDENT) & ~employed_student, 0, stage)
        return stage.astype(np.int64)

    def days_since_pay(self, ids: IntArray, day: int, start: date) -> IntArray:
        """Days since the last salary deposit (monthly on a fixed date, or every 14 days)."""
        today = date.fromordinal(start.toordinal() + day)
        monthly = (today.day - self.pay_day_of_month[ids]) % 30
        fortnightly = (day + self.pay_phase[ids]) % 14
        result: IntArray = np.where(self.biweekly[ids], fortnightly, monthly).astype(np.int64)
        return result

    def baseline_latent(self, ids: IntArray, start: date = DEFAULT_START) -> DayLatent:
        """Day-0 latent state without world dynamics (no season, drift or life events)."""
        products = self.products0[ids]
        age = self.age0[ids]
        return DayLatent(
            ids=ids,
            day=0,
            needs=dampen_needs(self.base_needs[ids], products),
            income=self.income0[ids],
            credit=self.credit0[ids],
            age=age,
            region=self.region0[ids],
            products=products,
            life_stage=self.life_stage(ids, age, np.zeros(ids.shape, dtype=np.bool_)),
            days_since_pay=self.days_since_pay(ids, 0, start),
        )

    def customer(self, customer_id: int) -> Customer:
        """One customer's baseline (day 0, no world dynamics) record."""
        return self.customers([customer_id])[0]

    def customers(self, customer_ids: Sequence[int] | IntArray | None = None) -> list[Customer]:
        """Baseline records of several customers (all when None), computed as one batch."""
        ids = self.ids(customer_ids)
        return observe(self, self.baseline_latent(ids))


# ---------------------------------------------------------------------------------------------
# Observation: latent state -> signals
# ---------------------------------------------------------------------------------------------


def _sigmoid(x: FloatArray) -> FloatArray:
    result: FloatArray = 1.0 / (1.0 + np.exp(-x))
    return result


def observe(population: Population, latent: DayLatent) -> list[Customer]:
    """The observable records of `latent.ids` on `latent.day`.

    Signals (income `I`, needs `n`, hashed noise `z ~ N(0, 1)`, `u ~ U(0, 1)`; monthly
    signals use 30-day periods, daily ones the day):

    * salary `= I exp(0.03 z)`; bills `= I s_bill exp(0.1 z)`;
    * travel spend `= 0.2 I n_travel^1.3 exp(0.25 z)`;
      dining `= I (0.03 + 0.05 n_travel + 0.03 [age < 35]) exp(0.2 z)`;
    * savings rate `= clip(0.02 + 0.3 thrift - 0.15 n_debt - 0.1 n_overdraft + 0.03 z)`;
    * balance `= I b (1 + 0.5 (1 - d_pay / 30)) exp(0.2 z) - 0.35 I n_overdraft u`;
    * days overdrawn (90 d) `= floor(10.8 n_overdraft^2 exp(0.4 z))`;
    * revolving balance `= 2 I n_debt^1.5 exp(0.25 z)` for card holders, else 0;
      pays minimum only with probability `sigmoid(6 n_debt - 3.5)`;
    * each page viewed in 7 days with probability `1 - exp(-e r_page(n))`, with engagement
      factor `e` and page rates rising with the matching need (mortgage calculator with
      home buying, travel with travel, ...);
    * abandoned application with probability `0.01 + 0.12 max_j n_j^2`.
    """
    pop = population
    ids = latent.ids
    day = latent.day
    key = pop.hash_key
    month = day // 30
    n = latent.needs
    income = latent.income
    segment = pop.segment[ids]

    def z(period: int, stream: int) -> FloatArray:
        return hash_normal(key, ids, period, stream)

    def u(period: int, stream: int) -> FloatArray:
        return hash_uniform(key, ids, period, stream)

    age_band = np.searchsorted(np.asarray(AGE_EDGES), latent.age, side="right")
    income_band = np.searchsorted(np.asarray(INCOME_EDGES), income * 12.0, side="right")
    credit_band = np.searchsorted(np.asarray(CREDIT_EDGES), latent.credit, side="right")
    tenure = np.round(pop.tenure0[ids] + day / 365.25, 1)

    salary = np.round(income * np.exp(0.03 * z(month, _S_SALARY)), 2)
    bills = np.round(income * pop.bill_share[ids] * np.exp(0.1 * z(month, _S_BILLS)), 2)
    subscriptions = np.floor(
        np.clip(pop.subscriptions_base[ids] + 1.2 * z(month, _S_SUBS) + 0.5, 0, 30)
    ).astype(np.int64)
    travel = np.round(0.2 * income * n[:, TRAVEL] ** 1.3 * np.exp(0.25 * z(month, _S_TRAVEL)), 2)
    dining = np.round(
        income
        * (0.03 + 0.05 * n[:, TRAVEL] + 0.03 * (latent.age < 35))
        * np.exp(0.2 * z(month, _S_DINING)),
        2,
    )
    savings_rate = np.round(
        np.clip(
            0.02
            + 0.3 * pop.thrift[ids]
            - 0.15 * n[:, DEBT]
            - 0.1 * n[:, OVERDRAFT]
            + 0.03 * z(month, _S_SAVRATE),
            -0.3,
            0.7,
        ),
        4,
    )
    cycle = 1.0 + 0.5 * (1.0 - latent.days_since_pay / 30.0)
    balance = np.round(
        income * pop.buffer_months[ids] * cycle * np.exp(0.2 * z(day, _S_BALANCE))
        - 0.35 * income * n[:, OVERDRAFT] * u(day, _S_SHORTFALL),
        2,
    )
    volatility = np.round(
        0.08
        + 0.6 * n[:, OVERDRAFT]
        + 0.1 * (segment == STUDENT)
        + 0.05 * np.abs(z(month, _S_VOLATILITY)),
        4,
    )
    overdrawn = np.minimum(
        np.floor(10.8 * n[:, OVERDRAFT] ** 2 * np.exp(0.4 * z(month, _S_OVERDRAWN))), 90
    ).astype(np.int64)
    has_card = latent.products[:, P_CARD] | latent.products[:, P_PREMIUM]
    revolving = np.where(
        has_card,
        np.round(2.0 * income * n[:, DEBT] ** 1.5 * np.exp(0.25 * z(month, _S_REVOLVING)), 2),
        0.0,
    )
    pays_minimum = (
        has_card & (revolving > 0) & (u(month, _S_MINIMUM) < _sigmoid(6.0 * n[:, DEBT] - 3.5))
    )

    engagement = np.clip(pop.engagement[ids] / 0.35, 0.3, 3.0)
    page_rates = np.column_stack(
        [
            0.02 + 1.5 * n[:, HOME] ** 2,
            0.05 + 1.2 * n[:, TRAVEL] ** 2,
            0.03 + 0.8 * n[:, SAVINGS] ** 2,
            0.02 + 0.8 * n[:, DEBT] ** 2,
            0.03 + 0.4 * (n[:, BUDGETING] ** 2 + n[:, OVERDRAFT] ** 2),
            0.05 + 0.5 * n[:, TRAVEL] ** 2 + 0.3 * n[:, DEBT] ** 2,
            0.02 + 0.6 * n[:, SAVINGS] * (pop.buffer_months[ids] > 3.0),
        ]
    )
    page_p = 1.0 - np.exp(-engagement[:, None] * page_rates)
    pages = np.column_stack([u(day, _S_PAGES + j) < page_p[:, j] for j in range(len(PAGES))])
    abandoned = u(day, _S_ABANDON) < 0.01 + 0.12 * n.max(axis=1) ** 2
    session = np.round(pop.session_habit[ids] * np.exp(0.35 * z(day, _S_SESSION)), 1)
    # Geometric with mean 0.5: P(k) = (2/3)(1/3)^k. A runner that tracks real dismissals
    # can replace it (`dataclasses.replace`).
    dismissed = np.floor(np.log1p(-u(day, _S_DISMISSED)) / math.log(1.0 / 3.0)).astype(np.int64)

    cols = {
        "age_band": age_band.tolist(),
        "income_band": income_band.tolist(),
        "region": latent.region.tolist(),
        "tenure": tenure.tolist(),
        "life_stage": latent.life_stage.tolist(),
        "credit_band": credit_band.tolist(),
        "salary": salary.tolist(),
        "balance": balance.tolist(),
        "savings_rate": savings_rate.tolist(),
        "volatility": volatility.tolist(),
        "overdrawn": overdrawn.tolist(),
        "bills": bills.tolist(),
        "subscriptions": subscriptions.tolist(),
        "travel": travel.tolist(),
        "dining": dining.tolist(),
        "revolving": revolving.tolist(),
        "pays_minimum": pays_minimum.tolist(),
        "abandoned": abandoned.tolist(),
        "device": pop.device[ids].tolist(),
        "session": session.tolist(),
        "dismissed": dismissed.tolist(),
        "gender": pop.gender[ids].tolist(),
        "ethnicity": pop.ethnicity[ids].tolist(),
        "marital": pop.marital[ids].tolist(),
        "segment": segment.tolist(),
        "credit": latent.credit.tolist(),
        "income": income.tolist(),
        "age": latent.age.tolist(),
        "family": pop.family[ids].tolist(),
        "engagement": pop.engagement[ids].tolist(),
    }
    needs_rows = [tuple(row) for row in n.tolist()]
    tone_rows = [tuple(row) for row in pop.tone_affinity[ids].tolist()]
    product_rows = latent.products.tolist()
    page_rows = pages.tolist()
    result: list[Customer] = []
    for j, cid in enumerate(ids.tolist()):
        result.append(
            Customer(
                customer_id=cid,
                day=day,
                profile=Profile(
                    age_band=AGE_BANDS[cols["age_band"][j]],
                    income_band=INCOME_BANDS[cols["income_band"][j]],
                    region=REGIONS[cols["region"][j]],
                    products_held=tuple(
                        name for name, held in zip(PRODUCTS, product_rows[j], strict=True) if held
                    ),
                    tenure_years=cols["tenure"][j],
                    life_stage=LIFE_STAGES[cols["life_stage"][j]],
                    credit_score_band=CREDIT_BANDS[cols["credit_band"][j]],
                ),
                cash_flow=CashFlow(
                    salary_deposit_monthly=cols["salary"][j],
                    balance=cols["balance"][j],
                    savings_rate=cols["savings_rate"][j],
                    volatility=cols["volatility"][j],
                    days_overdrawn_90d=cols["overdrawn"][j],
                    bills_monthly=cols["bills"][j],
                    subscriptions_count=cols["subscriptions"][j],
                    travel_spend_monthly=cols["travel"][j],
                    dining_spend_monthly=cols["dining"][j],
                    revolving_balance=cols["revolving"][j],
                    pays_minimum_only=cols["pays_minimum"][j],
                ),
                behavior=Behavior(
                    pages_viewed_7d=tuple(
                        name for name, seen in zip(PAGES, page_rows[j], strict=True) if seen
                    ),
                    abandoned_application=cols["abandoned"][j],
                    device=DEVICES[cols["device"][j]],
                    session_minutes=cols["session"][j],
                    offers_dismissed_30d=cols["dismissed"][j],
                ),
                protected_attributes=Protected(
                    gender=GENDERS[cols["gender"][j]],
                    ethnicity=ETHNICITIES[cols["ethnicity"][j]],
                    marital_status=MARITAL_STATUSES[cols["marital"][j]],
                ),
                latent=Latent(
                    segment=SEGMENTS[cols["segment"][j]],
                    needs=needs_rows[j],
                    tone_affinity=tone_rows[j],
                    credit_score=cols["credit"][j],
                    monthly_income=cols["income"][j],
                    age=cols["age"][j],
                    family=cols["family"][j],
                    engagement=cols["engagement"][j],
                ),
            )
        )
    return result


def segment_counts(population: Population) -> Mapping[str, int]:
    """How many customers each latent segment has (ground truth, for reports and tests)."""
    counts = np.bincount(population.segment, minlength=len(SEGMENTS))
    return dict(zip(SEGMENTS, counts.tolist(), strict=True))
