"""Use cases: experiments, decisions, outcomes, API keys. Each owns its transaction."""
