"""One declaration of the run parameters: every MechanismParams field (and every dataset field)
is reachable from `fedhh simulate`, the run spec of `fedhh query start` and the Flower run
config, with the dataclasses' defaults, checks and nothing hand-mapped."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest

from fedhh.cli import build_parser
from fedhh.errors import ParameterError
from fedhh.mechanisms.params import MechanismParams
from fedhh.protocol.limits import Limits
from fedhh.run import settings
from fedhh.server.analyst import load_run_spec
from fedhh.server.flower_app import FlowerRun, FlowerSettings

ROOT = Path(__file__).resolve().parents[2]
SPECIAL = {  # values that differ from the default and pass the checks
    "mechanism": "tap",
    "oracle": "grr",
    "step_rule": "fixed",
    "party_order": "given",
    "completion_mode": "sum",
    "phase1_keep": "confidence",
    "depth_rule": "ratio",
    "completion": 0.2,
    "final_weight": 2.0,
    "prune_rule": "consensus",
    "dataset": "aol",
    "split": "iid",
    "sizes": "skewed",
    "party_by": "sector-decade",
    "years": "1990-2000",
}


def _other(cls: type, name: str) -> Any:
    """A valid value of the field other than its default."""
    if name in SPECIAL:
        return SPECIAL[name]
    default = getattr(cls(), name)
    kind = settings._kind(cls, name)
    if kind is bool:
        return not default
    if kind is str:
        return "x"
    return kind(default * 2 if default else 3)


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(MechanismParams)])
def test_every_mechanism_parameter_is_reachable(name: str, tmp_path: Path) -> None:
    if name in settings.DERIVED:  # m: the item codec of the data sets it
        assert settings.DERIVED == {"m"}
        return
    value = _other(MechanismParams, name)
    want = MechanismParams(m=32, **{name: value})
    # fedhh simulate
    flag = "-k" if name == "k" else f"--{settings.key(name)}"
    argv = [flag] if value is True else [f"--no-{settings.key(name)}"] if value is False else []
    argv = argv or [flag, _text(value)]
    args = build_parser().parse_args(["simulate", *argv])
    assert settings.from_flags(MechanismParams, args, m=32) == want
    # the run spec of fedhh query start
    spec = tmp_path / "spec.toml"
    literal = _text(value) if not isinstance(value, str) else f'"{value}"'
    spec.write_text(f'parties = ["a"]\n[params]\nm = 32\n{name} = {literal}\n')
    assert load_run_spec(spec)["params"] == want
    # the Flower run config (as flwr run --run-config gives it, and as a string)
    for raw in (value, _text(value)):
        s = FlowerSettings.from_config({settings.key(name): raw})
        assert dataclasses.replace(s.params, m=32) == want


def test_dataset_fields_are_flags_and_config_keys() -> None:
    for f in dataclasses.fields(settings.DatasetParams):
        value = _other(settings.DatasetParams, f.name)
        flag = f"--{settings.key(f.name)}"
        argv = [flag] if value is True else [f"--no-{flag[2:]}"] if value is False else []
        args = build_parser().parse_args(["simulate", *(argv or [flag, _text(value)])])
        assert getattr(settings.from_flags(settings.DatasetParams, args), f.name) == value
        cfg = settings.from_config(settings.DatasetParams, {settings.key(f.name): value})
        assert getattr(cfg, f.name) == value


def test_pyproject_run_config_is_the_declared_one() -> None:
    """[tool.flwr.app.config] lists every key with the dataclasses' defaults (flwr run refuses
    keys it does not list): a field added to MechanismParams needs its line there."""
    doc = tomllib.loads((ROOT / "flower-app" / "pyproject.toml").read_text())
    cfg = doc["tool"]["flwr"]["app"]["config"]
    want = {
        **settings.to_config(MechanismParams()),
        **settings.to_config(settings.DatasetParams()),
        **settings.to_config(FlowerRun()),
        **settings.to_config(Limits()),
        "party-files": "",
    }
    missing = sorted(set(want) - set(cfg))
    assert not missing, f"add to [tool.flwr.app.config] in flower-app/pyproject.toml: {missing}"
    assert cfg == want


def test_checks_are_the_dataclasses() -> None:
    with pytest.raises(ParameterError, match="k must be"):
        settings.from_config(MechanismParams, {"k": 0})
    with pytest.raises(ParameterError, match="users must be"):
        settings.from_config(settings.DatasetParams, {"users": -5})
    with pytest.raises(ParameterError, match="unknown run parameter"):
        settings.params_from_table({"kapa": 3})
    assert settings.from_config(MechanismParams, {"prune-z": ""}).prune_z is None
