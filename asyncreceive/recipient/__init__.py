"""Recipient role: the offer cache (pure policy) and the service that drives it."""
