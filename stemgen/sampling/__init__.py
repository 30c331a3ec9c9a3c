"""Iterative decoding: small pure functions (schedule, guidance, candidates, ranking, commit)."""
