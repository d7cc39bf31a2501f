"""Policies that turn a customer's context and eligible arms into a probability vector."""
