"""Exceptions raised by groundrt: each names the bad input and what to do about it."""

from __future__ import annotations


class GroundrtError(Exception):
    """Base class of every error groundrt raises on purpose."""


class DataFormatError(GroundrtError, ValueError):
    """A dataset file is missing, unreadable or does not follow the PNG format."""


class PredictionFormatError(GroundrtError, ValueError):
    """A prediction file does not follow the groundrt prediction format."""
