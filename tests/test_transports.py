"""The transport contract: one run, every transport. The same run on the in-process engine
(``fedhh simulate``), the gRPC deployment (``fedhh deploy local``: real coordinator and party
agent processes), Flower's Simulation Engine and Flower's deployment engine gives the same answer,
estimates, standard errors and byte costs, over items of 32, 48 and 256 bits; and the same bad run
(over a limit, over the parties' privacy budget, an infeasible plan) gets the same refusal.

Every mechanism runs on the in-process and gRPC transports; on both Flower engines TAPS runs on
the 48- and 256-bit items (party files, and a URL federation each transport builds from its
dataset keys) and PEM-Local on the 32-bit ones (a Flower run costs 20-60 s of process
start-ups; the processes of each transport are shared by all its cases). The tooling is
tests/transports.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from transports import TRANSPORTS, Federation, Outcome, Transport, write_federations

from fedhh.mechanisms.params import MechanismParams

MECHANISMS = ("pem-local", "pem-global", "tap", "taps")
FEDERATIONS = ("int32", "text48", "url256", "urls")
DISTRIBUTED = ("grpc", "flower-sim", "flower-deploy")
# TAPS on the wide items, the baseline on the integers: every width on both Flower engines (the
# simulation as `fedhh simulate --engine flower --dataset urls` runs it, the deployment with the
# party files in the run config)
ON_FLOWER = {
    "flower-sim": [("taps", "text48"), ("taps", "urls"), ("pem-local", "int32")],
    "flower-deploy": [("taps", "text48"), ("taps", "url256"), ("pem-local", "int32")],
}
CASES = [
    pytest.param(t, mech, fed, id=f"{t}-{mech}-{fed}")
    for t in DISTRIBUTED
    for mech, fed in (
        [(m, f) for f in FEDERATIONS for m in MECHANISMS] if t == "grpc" else ON_FLOWER[t]
    )
]
# The same bad run on every transport, and the refusal each must give (in-process: its text).
BAD_RUNS = {
    "over-max-k": dict(k=5000),
    "over-max-epsilon": dict(epsilon=12.0),
    "infeasible-plan": dict(step_rule="fixed", eta=1),
}
WANT_REFUSAL = {
    "over-max-k": "k = 5000 is over the limit of 4096",
    "over-max-epsilon": "ε = 12 is over party party-0's maximum of 10 per run",
    "infeasible-plan": "party party-2 has 20 users, fewer than the 29 levels",
}

Opener = Callable[[str], Transport]


@pytest.fixture(scope="module")
def federations(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Federation]:
    return write_federations(tmp_path_factory.mktemp("federations"))


@pytest.fixture(scope="module")
def transport(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Opener]:
    """Each transport opened at its first case and shared by the rest; all closed (every
    process stopped and checked gone) at the end of the module."""
    root = tmp_path_factory.mktemp("transports")
    opened: dict[str, Transport] = {}

    def get(kind: str) -> Transport:
        if kind not in opened:
            (root / kind).mkdir()
            opened[kind] = TRANSPORTS[kind](root / kind)
        return opened[kind]

    yield get
    problems = []
    for t in opened.values():
        try:
            t.close()
        except AssertionError as exc:
            problems.append(f"{t.name}: {exc}")
    assert problems == []


def params_of(fed: Federation, mechanism: str, **changes: object) -> MechanismParams:
    return MechanismParams(
        **{"mechanism": mechanism, "epsilon": 4.0, "k": 8, "seed": 3, "m": fed.m, **changes}
    )  # type: ignore[arg-type]


_REFERENCE: dict[tuple[str, str, str], Outcome] = {}


def reference(transport: Opener, fed: Federation, mechanism: str, run_id: str) -> Outcome:
    """The in-process outcome (``fedhh simulate``) of the run, computed once."""
    key = (fed.name, mechanism, run_id)
    if key not in _REFERENCE:
        _REFERENCE[key] = transport("inprocess").run(fed, params_of(fed, mechanism), run_id)
    return _REFERENCE[key]


@pytest.mark.parametrize(("kind", "mechanism", "fed_name"), CASES)
def test_same_run_same_answer(
    transport: Opener, federations: dict[str, Federation], kind: str, mechanism: str, fed_name: str
) -> None:
    fed = federations[fed_name]
    run_id = f"{fed_name}-{mechanism}"
    want = reference(transport, fed, mechanism, run_id)
    assert want.refusal == "" and len(want.codes) > 0, want
    got = transport(kind).run(fed, params_of(fed, mechanism), run_id)
    assert got == want


@pytest.mark.parametrize("kind", ["inprocess", *DISTRIBUTED])
@pytest.mark.parametrize("bad", list(BAD_RUNS))
def test_same_bad_run_same_refusal(
    transport: Opener, federations: dict[str, Federation], kind: str, bad: str
) -> None:
    fed = federations["int32"]
    got = transport(kind).run(fed, params_of(fed, "taps", **BAD_RUNS[bad]), f"bad-{bad}")
    assert got.codes == () and WANT_REFUSAL[bad] in got.refusal, got.refusal
