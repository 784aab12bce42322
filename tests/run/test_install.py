"""The core install and its extras: what runs with the six core packages alone, and the one line a
command gives when its extra is missing.

The optional packages are hidden from a child interpreter by a meta-path finder (a
``sitecustomize`` on its PYTHONPATH) that refuses to import them, as if they were not installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fedhh import extras
from fedhh.errors import MissingExtra

ROOT = Path(__file__).resolve().parents[2]
CORE = {"numpy", "numba", "scipy", "xxhash", "grpcio", "protobuf"}
OPTIONAL = sorted({m for mods in extras.MODULES.values() for m in mods} | {"rich", "tqdm"})

HIDER = """
import os, sys
HIDDEN = set(os.environ["FEDHH_TEST_HIDDEN"].split(","))
class Hider:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Hider())
"""


def _requirement_name(req: str) -> str:
    for sep in "<>=!~;[ ":
        req = req.split(sep)[0]
    return req.lower()


def test_core_dependencies_are_the_six_packages() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert {_requirement_name(r) for r in project["dependencies"]} == CORE
    groups = project["optional-dependencies"]
    assert {"server", "flower", "simulation", "plots", "integrations"} <= set(groups)
    assert any(_requirement_name(r) == "flwr" for r in groups["flower"])


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a child that sees the core install only."""
    d = tmp_path_factory.mktemp("bare")
    (d / "sitecustomize.py").write_text(HIDER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "PYTHONPATH": str(d), "FEDHH_TEST_HIDDEN": ",".join(OPTIONAL)}


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT
    )


def test_the_hider_hides(bare: dict[str, str]) -> None:
    r = _run(bare, "-c", "import flwr")
    assert r.returncode == 1 and "No module named 'flwr'" in r.stderr


def test_simulate_and_help_run_on_the_core(bare: dict[str, str]) -> None:
    r = _run(bare, "-m", "fedhh", "--help")
    assert r.returncode == 0, r.stderr
    assert "simulate" in r.stdout
    r = _run(bare, "-m", "fedhh", "simulate", "--users", "5000", "--parties", "2", "-k", "4")
    assert r.returncode == 0, r.stderr
    assert "F1" in r.stdout


def test_without_the_accounting_extra_runs_compose_by_basic_composition(
    bare: dict[str, str],
) -> None:
    """The core install states what a run cost each user towards the coordinator by basic
    composition, and names the extra that gives the optimal one."""
    import json

    argv = ["-m", "fedhh", "simulate", "--users", "5000", "--parties", "2", "-k", "4"]
    r = _run(bare, *argv, "--quiet", "--output", "-")
    assert r.returncode == 0, r.stderr
    spent = [b["central_spent"] for b in json.loads(r.stdout)["privacy"]["budgets"].values()]
    assert {s["method"] for s in spent} == {"basic"}
    assert all(s["epsilon"] == s["basic"]["epsilon"] > 0 for s in spent)


def test_the_device_sdk_imports_no_optional_or_heavy_module(bare: dict[str, str]) -> None:
    code = (
        "import sys, fedhh.clients.reporter; "
        "print(sorted(m for m in ('scipy', 'numba', 'flwr', 'psutil', 'fedhh.server') "
        "if m in sys.modules))"
    )
    r = _run(bare, "-c", code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["coordinator", "serve", "--tokens", "t.json"], "server"),
        (["party", "serve", "--coordinator", "x:1", "--party-id", "a", "--data", "d"], "server"),
        (["deploy", "local"], "server"),
        (["simulate", "--engine", "flower"], "simulation"),
        (["flower", "run", "."], "flower"),
        (["compare", "--plot", "c.png"], "plots"),
    ],
)
def test_a_command_names_its_missing_extra(
    bare: dict[str, str], argv: list[str], extra: str
) -> None:
    if argv[:2] == ["party", "serve"]:
        argv = [*argv, "--token-file", "t", "--db", "p.db"]
    r = _run(bare, "-m", "fedhh", *argv)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert f"pip install 'fedhh[{extra}]'" in lines[0]


def test_require_passes_where_the_extra_is_installed() -> None:
    extras.require("server", "this test")  # the dev install has every extra
    with pytest.raises(MissingExtra, match=r"fedhh\[nothing\]"):
        extras.MODULES["nothing"] = ("no_such_module_fedhh",)
        try:
            extras.require("nothing", "this test")
        finally:
            del extras.MODULES["nothing"]
