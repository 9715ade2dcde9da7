"""Upgrades: what may move to which version (skew.py), and what an upgrade changes (plan.py)."""
