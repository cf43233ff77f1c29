"""Rewind search package."""
