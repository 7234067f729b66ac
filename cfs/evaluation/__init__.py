"""Accuracy matrix, metrics derived from it, Avalanche-style names, result files and plots."""
