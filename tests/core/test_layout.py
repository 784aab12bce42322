"""The layout shows the architecture (docs/architecture.md): server/ (coordinator side) and
clients/ (party and device side) never import each other, the core and protocol layers import
neither grpc nor flwr, no module imports one that imports it back (at any depth, function-level
imports included), test tooling stays in tests/, and no module is over 500 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 500
# The glue above both sides (the command line, Flower's simulation that starts both apps).
TOP = ("fedhh/cli/", "fedhh/flower/simulation.py")
# Transport code that may import grpc or flwr (the wire, the Flower transport, integrations).
TRANSPORT = ("fedhh/wire/", "fedhh/flower/", "fedhh/integrations/")


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
        p for p in _modules("fedhh") if not str(p.relative_to(ROOT)).startswith(TOP + TRANSPORT)
    ]
    assert _offending(core, ("grpc", "grpc_health", "grpc_reflection", "flwr")) == []
    assert _offending(core, ("fedhh.server", "fedhh.clients")) == []


@pytest.mark.parametrize("top", ["server", "clients", "fedhh"])
def test_no_test_tooling_in_the_package(top: str) -> None:
    # (psutil is a run-time dependency: fedhh.ops.procs stops the services a command started)
    assert _offending(_modules(top), ("pytest", "hypothesis")) == []


def test_no_module_over_500_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in _modules("fedhh", "server", "clients", "tests", "experiments")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] in ("server", "clients"):  # installed as fedhh.server, fedhh.clients
        parts.insert(0, "fedhh")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the fedhh modules it imports (``from a import b`` names ``a.b`` if that is a
    module, else ``a``)."""
    mods = {_module_name(p): p for p in _modules("fedhh", "server", "clients")}
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        out: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    out.add(sub if sub in mods else node.module)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
        graph[name] = {m for m in out if m in mods and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle() -> None:
    assert _cycles(_import_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
