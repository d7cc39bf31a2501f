"""Evaluation: pure computation on logged decisions and outcomes (lift, SRM, off-policy)."""
