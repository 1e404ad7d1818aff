"""Conversion modes: one frozen `Mode` per file, one registry line each.

Adding a mode is a new file here that defines `MODE` and one `register` line below; convert,
the gate, localize, the quantizer's config and the CLI choices read the registry.

Layer: above runtime/ (a Mode refers to the floors that `bridge.runtime.tolerances` holds as
data, so every number stays in that one file) and below passes/, quantize/ and lower/, which
read their configuration from it. The per-layer links are plain data (`Link`) so they live here
too; `bridge.verify.localize` reads them by the mode's name.
"""

from __future__ import annotations

from bridge.errors import ConfigError
from bridge.modes import dynamic, fp16, fp32, int8, int16x8
from bridge.modes.base import EXPORT, Link, Mode
from bridge.registry import Registry

__all__ = ["EXPORT", "MODES", "Link", "Mode", "get", "integer_mode", "register"]

#: The modes in report order.
MODES: Registry[Mode] = Registry("mode")


def register(mode: Mode) -> Mode:
    """Register `mode` under its name (twice is a ValueError) and return it."""
    return MODES.register(mode.name)(mode)


def get(name: str) -> Mode:
    """The mode called `name`; ConfigError lists the known ones."""
    return MODES.get(name)


def integer_mode(activation_dtype: str) -> Mode:
    """The first registered mode whose activations are `activation_dtype` ("int8", "int16").

    Raises:
        ConfigError: no mode has integer activations of that type.
    """
    for name in MODES:
        mode = MODES.get(name)
        if mode.integer and mode.activation_dtype == activation_dtype:
            return mode
    known = sorted({MODES.get(n).activation_dtype for n in MODES if MODES.get(n).integer})
    raise ConfigError(f"unknown activation type {activation_dtype!r}; choose {' or '.join(known)}")


register(fp32.MODE)
register(fp16.MODE)
register(dynamic.MODE)
register(int8.MODE)
register(int16x8.MODE)
