"""A synthetic bank-customer world with known ground truth, for testing offer policies.

* `population`: seeded customers with hidden needs and observable signals (the context).
* `world`: simulated days, life events, seasons and app visits on triggers.
* `response`: known click/apply/convert/dismiss probabilities, delays, organic conversions,
  and exact expected rewards for a reward horizon.
* `truth`: exact policy values, lift and the oracle arm.

Only `bandit_platform.domain` is imported from the platform.
"""
