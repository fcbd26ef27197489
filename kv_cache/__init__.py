"""Derived state: rebuildable roaring-bitmap indexes and views, never authoritative (issue 8)."""
