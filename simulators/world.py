"""Simulated time: customers whose needs move with seasons, life events and drift, and who
open the app on triggers.

`World(population_size, seed, days)` holds a `Population` and, per customer, the dates of
life events (a new job, a home move, a loan paid off, a yearly renewal) and slow drift terms.
The latent state on day `t` is a closed-form function of those, so
`world.customer_state(customer_id, day)` can be computed for any customer and day in any
order and always gives the same record.

Needs on day `t` (before clipping to [0, 1] and damping by products held):

* seasons: `n_travel *= 1 + 0.6 b(doy, 200, 25) + 0.4 b(doy, 355, 10)` (summer and December),
  `n_savings += 0.05 b(doy, 10, 15)`, `n_budgeting += 0.1 b(doy, 10, 15)`,
  `n_overdraft += 0.05 b(doy, 15, 15)` (January), with the circular bump
  `b(doy, c, s) = exp(-d(doy, c)^2 / (2 s^2))` over the day of the year;
* drift: `n_j += sum_m a_jm (sin(2 pi t / P_jm + phi_jm) - sin(phi_jm))`,
  `a ~ N(0, 0.05 drift_scale)` (`drift_scale` 1 by default, 0 turns drift off),
  `P ~ U(120, 720)` days (zero on day 0);
* new job on day `J`: income `x f` (`f ~ U(1.1, 1.4)`; a student's becomes at least 2,800
  and stops being a student), then `n_savings += 0.15 e^{-(t-J)/90}`,
  `n_travel += 0.05 e^{-(t-J)/90}`, `n_debt -= 0.1`;
* home move on day `M`: `n_home += 0.5 clip(1 - (M - t) / 120, 0, 1)` in the 120 days
  before, `n_budgeting += 0.1` within 30 days of it, `n_home *= 0.1` after it; after the
  move the region changes and some movers hold a new mortgage;
* loan paid off on day `L`: the personal loan leaves `products_held`, `n_debt *= 0.6`.

Visits on day `t` come from a generator seeded by `(seed, 2, t)`, so any day can be generated
alone and the sequence is identical whatever is consumed before it. Trigger rates per
customer and day (`e` engagement, `s` the `visit_rate_scale`):

* `app_open`: Poisson, `s e (1.25 on weekends)`;
* `paycheck_deposit`: on pay days, Bernoulli `s min(0.35 + 0.5 min(e, 1), 0.95)`;
* `large_purchase`: Poisson, `s (0.015 + 0.1 n_travel + 0.02 min(I / 5000, 2))`;
* `low_balance`: Poisson, `s (0.003 + 0.25 n_overdraft^1.5 (0.5 + d_pay / 30))`;
* `credit_score_change`: on the customer's monthly bureau day, Bernoulli
  `s (0.3 + 0.4 n_debt)`;
* `loan_payoff`: on the payoff day, Bernoulli `0.9 s`;
* `renewal_due`: in the 7 days before a savings or investment holder's yearly renewal,
  Bernoulli `0.12 s` per day.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Final

import numpy as np

from simulators.population import (
    ASPIRING,
    BUDGETING,
    DEBT,
    DEFAULT_START,
    HOME,
    OVERDRAFT,
    P_INVEST,
    P_LOAN,
    P_MORTGAGE,
    P_SAVINGS,
    PAYCHECK,
    RETIREE,
    SAVINGS,
    STUDENT,
    TRAVEL,
    TRIGGERS,
    YOUNG_PROFESSIONAL,
    BoolArray,
    Customer,
    DayLatent,
    FloatArray,
    IntArray,
    Population,
    dampen_needs,
    observe,
)
from simulators.response import SURFACES, Situation

#: Day number that stands for "never happens".
NEVER: Final = 1 << 40
SECONDS_PER_DAY: Final = 86_400

#: Surface probabilities per trigger, in `SURFACES` order
#: (home_feed, post_login_banner, transaction_detail).
SURFACE_BY_TRIGGER: Final[Mapping[str, tuple[float, float, float]]] = {
    "app_open": (0.55, 0.35, 0.10),
    "paycheck_deposit": (0.40, 0.50, 0.10),
    "large_purchase": (0.25, 0.15, 0.60),
    "low_balance": (0.20, 0.30, 0.50),
    "credit_score_change": (0.50, 0.40, 0.10),
    "loan_payoff": (0.50, 0.40, 0.10),
    "renewal_due": (0.50, 0.40, 0.10),
}

_APP, _PAY, _PURCHASE, _LOW, _CREDIT, _PAYOFF, _RENEWAL = range(7)


@dataclass(frozen=True, slots=True)
class Visit:
    """A customer opening the app: the moment a decision can be requested.

    Attributes:
        day: simulated day (0-based).
        time_seconds: seconds since the start of day 0.
        customer_id: the customer.
        trigger: one of `TRIGGERS` (the context's `trigger.event`).
        surface: one of `SURFACES`, where the offer would be shown.
    """

    day: int
    time_seconds: int
    customer_id: int
    trigger: str
    surface: str


@dataclass(frozen=True, slots=True)
class LifeEvents:
    """One customer's life-event days (`None` when it does not happen), for tests and audits."""

    new_job_day: int | None
    move_day: int | None
    loan_payoff_day: int | None
    renewal_day_of_year: int


def _bump(doy: int, centre: float, width: float) -> float:
    distance = abs(doy - centre)
    distance = min(distance, 365.0 - distance)
    return float(np.exp(-0.5 * (distance / width) ** 2))


class World:
    """A population living through `days` simulated days.

    Args:
        population_size: number of customers.
        seed: non-negative seed; everything (population, life events, visits, signals) is a
            deterministic function of it.
        days: length of the simulation in days.
        start: calendar date of day 0 (seasons, weekends and pay days follow it).
        visit_rate_scale: multiplies every trigger rate (more or fewer visits).
        drift_scale: multiplies the drift amplitudes `a_jm` (0 turns drift off, 2 doubles
            it); the random draws are the same whatever the scale, so worlds that differ
            only in it have the same customers, life events and visits on day 0.
    """

    def __init__(
        self,
        population_size: int,
        seed: int,
        days: int,
        *,
        start: date = DEFAULT_START,
        visit_rate_scale: float = 1.0,
        drift_scale: float = 1.0,
    ) -> None:
        if days < 1:
            raise ValueError("days must be at least 1")
        if not visit_rate_scale > 0:
            raise ValueError("visit_rate_scale must be positive")
        if not (math.isfinite(drift_scale) and drift_scale >= 0):
            raise ValueError("drift_scale must be a finite number >= 0")
        self.seed = seed
        self.days = days
        self.start = start
        self.visit_rate_scale = float(visit_rate_scale)
        self.drift_scale = float(drift_scale)
        self.population = Population.generate(population_size, seed)
        pop = self.population
        n = len(pop)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
        segment = pop.segment
        horizon = days / 365.0

        job_rate = np.select(
            [segment == STUDENT, segment == YOUNG_PROFESSIONAL, segment == PAYCHECK,
             segment == RETIREE],
            [0.25, 0.15, 0.10, 0.0],
            0.06,
        )  # fmt: skip
        job_happens = rng.random(n) < 1.0 - np.exp(-job_rate * horizon)
        self._job_day: IntArray = np.where(
            job_happens, rng.integers(1, max(days, 2), size=n), NEVER
        ).astype(np.int64)
        self._job_factor: FloatArray = rng.uniform(1.1, 1.4, size=n)

        move_rate = np.select(
            [segment == ASPIRING, segment == YOUNG_PROFESSIONAL, pop.family, segment == RETIREE],
            [0.5, 0.08, 0.04, 0.02],
            0.03,
        )
        # A move up to 120 days after the end still shows as rising home-buying need.
        move_happens = rng.random(n) < 1.0 - np.exp(-move_rate * (days + 120) / 365.0)
        self._move_day: IntArray = np.where(
            move_happens, rng.integers(1, days + 120, size=n), NEVER
        ).astype(np.int64)
        self._move_region: IntArray = rng.integers(0, 5, size=n).astype(np.int64)
        self._move_mortgage: BoolArray = rng.random(n) < np.where(segment == ASPIRING, 0.7, 0.5)

        payoff_happens = pop.products0[:, P_LOAN] & (rng.random(n) < 1.0 - np.exp(-0.25 * horizon))
        self._payoff_day: IntArray = np.where(
            payoff_happens, rng.integers(1, max(days, 2), size=n), NEVER
        ).astype(np.int64)
        self._renewal_doy: IntArray = rng.integers(0, 365, size=n).astype(np.int64)
        self._bureau_day_of_month: IntArray = rng.integers(1, 29, size=n).astype(np.int64)

        self._drift_amplitude: FloatArray = 0.05 * self.drift_scale * rng.standard_normal((n, 6, 2))
        self._drift_period: FloatArray = rng.uniform(120.0, 720.0, size=(n, 6, 2))
        self._drift_phase: FloatArray = rng.uniform(0.0, 2.0 * np.pi, size=(n, 6, 2))
        self._credit_amplitude: FloatArray = 15.0 * rng.standard_normal(n)
        self._credit_period: FloatArray = rng.uniform(200.0, 600.0, size=n)
        self._credit_phase: FloatArray = rng.uniform(0.0, 2.0 * np.pi, size=n)

    # -- calendar ---------------------------------------------------------------------------

    def date_of(self, day: int) -> date:
        """The calendar date of a simulated day."""
        return date.fromordinal(self.start.toordinal() + day)

    def day_of_year(self, day: int) -> int:
        """0-based day of the year of a simulated day (364 on 31 December of a leap year)."""
        return min(self.date_of(day).timetuple().tm_yday - 1, 364)

    def _check_day(self, day: int) -> None:
        if not 0 <= day < self.days:
            raise ValueError(f"day {day} is outside 0..{self.days - 1}")

    # -- latent state -----------------------------------------------------------------------

    def life_events(self, customer_id: int) -> LifeEvents:
        """The life-event days of one customer (ground truth)."""
        i = int(self.population.ids([customer_id])[0])

        def day_or_none(value: int) -> int | None:
            return None if value >= NEVER else value

        return LifeEvents(
            new_job_day=day_or_none(int(self._job_day[i])),
            move_day=day_or_none(int(self._move_day[i])),
            loan_payoff_day=day_or_none(int(self._payoff_day[i])),
            renewal_day_of_year=int(self._renewal_doy[i]),
        )

    def latent(self, ids: IntArray, day: int) -> DayLatent:
        """The latent state of `ids` on `day` (formulas in the module docstring)."""
        pop = self.population
        doy = self.day_of_year(day)
        needs = pop.base_needs[ids].copy()
        needs[:, TRAVEL] *= 1.0 + 0.6 * _bump(doy, 200, 25) + 0.4 * _bump(doy, 355, 10)
        new_year = _bump(doy, 10, 15)
        needs[:, SAVINGS] += 0.05 * new_year
        needs[:, BUDGETING] += 0.10 * new_year
        needs[:, OVERDRAFT] += 0.05 * _bump(doy, 15, 15)

        phase = self._drift_phase[ids]
        drift = self._drift_amplitude[ids] * (
            np.sin(2.0 * np.pi * day / self._drift_period[ids] + phase) - np.sin(phase)
        )
        needs += drift.sum(axis=2)

        since_job = day - self._job_day[ids]
        employed = since_job >= 0
        fresh = np.where(employed, np.exp(-np.maximum(since_job, 0) / 90.0), 0.0)
        income0 = pop.income0[ids]
        raised = income0 * self._job_factor[ids]
        raised = np.where(pop.segment[ids] == STUDENT, np.maximum(raised, 2800.0), raised)
        income = np.where(employed, raised, income0)
        needs[:, SAVINGS] += 0.15 * fresh
        needs[:, TRAVEL] += 0.05 * fresh
        needs[:, DEBT] -= 0.10 * employed

        to_move = self._move_day[ids] - day
        moved = to_move <= 0
        ramp = np.clip(1.0 - to_move / 120.0, 0.0, 1.0)
        needs[:, HOME] = np.where(moved, needs[:, HOME] * 0.1, needs[:, HOME] + 0.5 * ramp)
        needs[:, BUDGETING] += 0.1 * (np.abs(to_move) <= 30)
        region = np.where(moved, self._move_region[ids], pop.region0[ids])
        products = pop.products0[ids].copy()
        products[:, P_MORTGAGE] |= moved & self._move_mortgage[ids]

        paid = day >= self._payoff_day[ids]
        products[:, P_LOAN] &= ~paid
        needs[:, DEBT] = np.where(paid, needs[:, DEBT] * 0.6, needs[:, DEBT])

        needs = dampen_needs(np.clip(needs, 0.0, 1.0), products)
        c_phase = self._credit_phase[ids]
        credit = np.clip(
            pop.credit0[ids]
            + self._credit_amplitude[ids]
            * (np.sin(2.0 * np.pi * day / self._credit_period[ids] + c_phase) - np.sin(c_phase))
            + 15.0 * employed,
            300.0,
            850.0,
        )
        age = pop.age0[ids] + day / 365.25
        return DayLatent(
            ids=ids,
            day=day,
            needs=needs,
            income=income,
            credit=credit,
            age=age,
            region=region.astype(np.int64),
            products=products,
            life_stage=pop.life_stage(ids, age, employed),
            days_since_pay=pop.days_since_pay(ids, day, self.start),
        )

    def customer_state(self, customer_id: int, day: int) -> Customer:
        """One customer's record on one day: the same whenever and however it is asked for.

        Raises:
            ValueError: for a day outside the simulation.
            IndexError: for an unknown customer.
        """
        return self.customer_states(day, [customer_id])[0]

    def customer_states(
        self, day: int, customer_ids: Sequence[int] | IntArray | None = None
    ) -> list[Customer]:
        """Records of several customers (all when None) on one day, computed as one batch.

        Much faster per customer than `customer_state` for many customers (one call per
        day's visits, say); the records are identical.
        """
        self._check_day(day)
        ids = self.population.ids(customer_ids)
        return observe(self.population, self.latent(ids, day))

    # -- visits -----------------------------------------------------------------------------

    def trigger_rates(self, day: int) -> FloatArray:
        """Expected visits per customer and trigger on `day`, shape `(customers, 7)`.

        Columns follow `TRIGGERS`; the event-style triggers (pay day, credit score, loan
        payoff, renewal) are probabilities of one visit.
        """
        self._check_day(day)
        pop = self.population
        ids = pop.ids()
        lat = self.latent(ids, day)
        s = self.visit_rate_scale
        today = self.date_of(day)
        engagement = pop.engagement
        n = lat.needs
        rates = np.zeros((len(pop), len(TRIGGERS)))
        rates[:, _APP] = s * engagement * (1.25 if today.weekday() >= 5 else 1.0)
        payday = np.where(
            pop.biweekly, (day + pop.pay_phase) % 14 == 0, pop.pay_day_of_month == today.day
        )
        rates[:, _PAY] = np.where(
            payday, np.minimum(s * (0.35 + 0.5 * np.minimum(engagement, 1.0)), 0.95), 0.0
        )
        rates[:, _PURCHASE] = s * (
            0.015 + 0.1 * n[:, TRAVEL] + 0.02 * np.minimum(lat.income / 5000.0, 2.0)
        )
        rates[:, _LOW] = s * (
            0.003 + 0.25 * n[:, OVERDRAFT] ** 1.5 * (0.5 + lat.days_since_pay / 30.0)
        )
        rates[:, _CREDIT] = np.where(
            self._bureau_day_of_month == today.day,
            np.minimum(s * (0.3 + 0.4 * n[:, DEBT]), 1.0),
            0.0,
        )
        rates[:, _PAYOFF] = np.where(self._payoff_day == day, min(0.9 * s, 1.0), 0.0)
        holder = lat.products[:, P_SAVINGS] | lat.products[:, P_INVEST]
        until = (self._renewal_doy - self.day_of_year(day)) % 365
        rates[:, _RENEWAL] = np.where(holder & (until < 7), min(0.12 * s, 1.0), 0.0)
        return rates

    def visits_on(self, day: int) -> list[Visit]:
        """Every visit of one day, ordered by (time, customer id, trigger order).

        Draws: Poisson counts for app_open, large_purchase and low_balance, Bernoulli for the
        others; the hour of a visit is `6 + Exp(mean 1.5)` for a pay day, `U(9, 21)` for a
        large purchase, else the customer's preferred hour `+ N(0, 2.5)` (mod 24); the surface
        follows `SURFACE_BY_TRIGGER`.
        """
        rates = self.trigger_rates(day)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 2, day]))
        poisson_cols = [_APP, _PURCHASE, _LOW]
        bernoulli_cols = [_PAY, _CREDIT, _PAYOFF, _RENEWAL]
        counts = np.zeros(rates.shape, dtype=np.int64)
        counts[:, poisson_cols] = rng.poisson(rates[:, poisson_cols])
        counts[:, bernoulli_cols] = rng.random((rates.shape[0], 4)) < rates[:, bernoulli_cols]
        flat = counts.reshape(-1)
        cells = np.repeat(np.arange(flat.shape[0]), flat)
        customer = cells // len(TRIGGERS)
        trigger = cells % len(TRIGGERS)
        m = cells.shape[0]
        u = rng.random((m, 3))
        normal = np.sqrt(-2.0 * np.log1p(-u[:, 0])) * np.cos(2.0 * np.pi * u[:, 1])
        hour = (self.population.preferred_hour[customer] + 2.5 * normal) % 24.0
        hour = np.where(trigger == _PAY, np.minimum(6.0 - 1.5 * np.log1p(-u[:, 0]), 23.99), hour)
        hour = np.where(trigger == _PURCHASE, 9.0 + 12.0 * u[:, 0], hour)
        seconds = day * SECONDS_PER_DAY + np.minimum(
            np.floor(hour * 3600.0).astype(np.int64), SECONDS_PER_DAY - 1
        )
        surface_cdf = np.cumsum(np.asarray([SURFACE_BY_TRIGGER[t] for t in TRIGGERS]), axis=1)
        surface = np.minimum((u[:, 2][:, None] >= surface_cdf[trigger]).sum(axis=1), 2)
        order = np.lexsort((trigger, customer, seconds))
        return [
            Visit(day, int(t), int(c), TRIGGERS[k], SURFACES[f])
            for t, c, k, f in zip(
                seconds[order].tolist(),
                customer[order].tolist(),
                trigger[order].tolist(),
                surface[order].tolist(),
                strict=True,
            )
        ]

    def visits(self, start_day: int = 0, end_day: int | None = None) -> Iterator[Visit]:
        """Visits of days `start_day .. end_day - 1` (default: all days) in time order."""
        end = self.days if end_day is None else end_day
        for day in range(start_day, end):
            yield from self.visits_on(day)

    def situation(
        self,
        visit: Visit,
        exposures: Mapping[str, Sequence[float]] | None = None,
        customer: Customer | None = None,
    ) -> Situation:
        """The response model's view of a visit.

        Args:
            visit: the visit.
            exposures: per offer key, hours since each earlier exposure of that offer.
            customer: the visit's customer record, when already computed in a batch.
        """
        record = customer or self.customer_state(visit.customer_id, visit.day)
        if record.customer_id != visit.customer_id or record.day != visit.day:
            raise ValueError("customer record does not belong to this visit")
        return Situation(
            customer=record,
            trigger=visit.trigger,
            surface=visit.surface,
            time_seconds=float(visit.time_seconds),
            exposures={k: tuple(v) for k, v in (exposures or {}).items()},
        )
