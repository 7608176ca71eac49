"""Baselines to measure labelwise against: the seed's one-request-at-a-time transformers server."""
