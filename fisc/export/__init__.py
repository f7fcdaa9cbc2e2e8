"""Frozen artifacts and submission files: freeze a checkpoint, validate a submission."""
