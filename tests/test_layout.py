"""The layout shows the architecture (docs/architecture.md): server/ (coordinator side) and
clients/ (party and device side) never import each other, the core and protocol layers import
neither grpc nor flwr, test tooling stays in tests/, and no module is over 500 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 500
# The glue above both sides (the command line, Flower's simulation that starts both apps).
TOP = {"fedhh/cli.py", "fedhh/flower_sim.py"}


def _modules(*dirs: str) -> list[Path]:
    return sorted(p for d in dirs for p in (ROOT / d).rglob("*.py") if "wire/v1" not in str(p))


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (function-level imports included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def _offending(paths: list[Path], banned: tuple[str, ...]) -> list[str]:
    return [
        f"{p.relative_to(ROOT)} imports {m}"
        for p in paths
        for m in sorted(_imports(p))
        if m.split(".")[0] in banned or any(m == b or m.startswith(b + ".") for b in banned)
    ]


def test_server_and_clients_do_not_import_each_other() -> None:
    assert _offending(_modules("server"), ("fedhh.clients",)) == []
    assert _offending(_modules("clients"), ("fedhh.server",)) == []


def test_core_and_protocol_import_neither_grpc_nor_flwr() -> None:
    core = [
        p
        for p in _modules("fedhh")
        if "fedhh/wire/" not in str(p)
        and "fedhh/integrations/" not in str(p)
        and str(p.relative_to(ROOT)) not in TOP
    ]
    assert _offending(core, ("grpc", "grpc_health", "grpc_reflection", "flwr")) == []
    assert _offending(core, ("fedhh.server", "fedhh.clients")) == []


@pytest.mark.parametrize("top", ["server", "clients", "fedhh"])
def test_no_test_tooling_in_the_package(top: str) -> None:
    # (psutil is a run-time dependency: fedhh.procs stops the services a command started)
    assert _offending(_modules(top), ("pytest", "hypothesis")) == []


def test_no_module_over_500_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in _modules("fedhh", "server", "clients", "tests", "experiments")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
