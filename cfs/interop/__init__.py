"""Bridges to other continual-learning libraries (optional extras, imported lazily)."""
