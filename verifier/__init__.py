"""Rewind verifier package."""
