"""Rewind experiments package."""
