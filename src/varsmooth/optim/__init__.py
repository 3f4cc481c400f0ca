"""Optimizers: IVON (variational learning) and SAM."""

from .ivon import IVON, predictive_probs

__all__ = ["IVON", "predictive_probs", "SAM"]
from .sam import SAM  # noqa: E402
