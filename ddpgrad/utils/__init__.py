"""Utilities: datasets and loaders (``ddpgrad.utils.data``)."""

from . import data  # noqa: F401
