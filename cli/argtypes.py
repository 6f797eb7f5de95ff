"""Argument types of the command line: counts, byte sizes, rates, origin lists."""

from __future__ import annotations

import argparse
import os
import re

from api.embed import parse_origins


def env_list(name: str) -> list[str]:
    """The comma-separated values of environment variable `name`, blanks dropped."""
    return [k.strip() for k in os.environ.get(name, "").split(",") if k.strip()]


def positive_int(text: str) -> int:
    """An integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def origins(text: str) -> list[str]:
    """A comma-separated list of web origins (`https://lms.example.edu`)."""
    try:
        return parse_origins(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_SIZE_RE = re.compile(r"\A\s*([0-9]+(?:\.[0-9]+)?)\s*([kmg]?)(?:i?b)?\s*\Z", re.IGNORECASE)


def size(text: str) -> int:
    """A byte count: `1048576`, `1MiB`, `32M`, `512k` (binary units)."""
    match = _SIZE_RE.match(text)
    value = int(float(match[1]) * _SIZE_UNITS[match[2].lower()]) if match else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a size of at least 1 byte: {text!r} (use bytes, or k/M/G)")
    return value


def rate(text: str) -> float:
    """A non-negative number (per second, or seconds)."""
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value
