"""Embedded recipes (package data)."""
