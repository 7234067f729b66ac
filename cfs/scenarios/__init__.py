"""Scenarios: streams of experiences built from a data set, a class order and a split."""

from cfs.scenarios.base import Experience, Scenario

__all__ = ["Experience", "Scenario"]
