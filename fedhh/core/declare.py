"""Declaring a run parameter: a dataclass field with its default and its help text.

The parameter dataclasses (:class:`~fedhh.mechanisms.params.MechanismParams`,
:class:`~fedhh.run.settings.DatasetParams`, the Flower ServerApp's ``FlowerRun``) declare each field
as ``name: type = param(default, "what it means")``; the text is the field's metadata
(``metadata["help"]``), which :mod:`fedhh.run.settings` shows as the flag's help. This module
imports nothing of fedhh, so every declaring module can use it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, TypeVar

T = TypeVar("T")
HELP = "help"  # the metadata key of a field's help text


def param(default: T, help: str) -> T:
    """A dataclass field with ``default`` and its ``help`` text (what the parameter means, its
    units and allowed values, what the default does)."""
    return dataclasses.field(default=default, metadata={HELP: help})


def help_of(field: dataclasses.Field[Any]) -> str:
    """The help text a field was declared with ("" if none)."""
    return str(field.metadata.get(HELP, ""))


def config_value(value: Any) -> str:
    """A parameter value as TOML (the syntax of a run spec, ``flwr run --run-config`` and a
    Flower app's ``pyproject.toml``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))
