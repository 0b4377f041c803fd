"""Shared backbone of the SPM services: one envelope, one outbox, one idempotent consumer, one topology."""
