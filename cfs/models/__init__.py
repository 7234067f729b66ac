"""Backbones (feature extractors) and heads (classifiers) and the model that joins them."""

from cfs.models.model import ContinualModel

__all__ = ["ContinualModel"]
