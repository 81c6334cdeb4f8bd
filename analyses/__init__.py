"""Analyses: the one-method base class, the registry and the built-in analyses (to come)."""
