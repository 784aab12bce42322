"""Every number is checked where it enters, and a bad one gets one precise refusal: no traceback,
no hang, nothing changed (issue 24, "edge input")."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest

from fedhh.cli import main
from fedhh.core.items import StringCodec
from fedhh.datasets import load_party_files
from fedhh.errors import DataError, ParameterError, ProtocolError
from fedhh.mechanisms.params import MechanismParams
from fedhh.oracles import GRR, OLH, OUE
from fedhh.protocol.admission import admit_run
from fedhh.protocol.encoding import params_from_pb
from fedhh.protocol.limits import Limits
from fedhh.server.analyst import load_run_spec
from fedhh.wire.v1 import protocol_pb2


def _cli(*argv: str) -> tuple[int, str]:
    """The command's exit status and stderr (argparse's usage errors exit through SystemExit)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(list(argv))
        except SystemExit as exc:
            status = int(exc.code or 0)
    return status, err.getvalue().strip()


@pytest.mark.parametrize("eps", [1e-3, 1e-10, 1e-300])
def test_an_epsilon_too_small_to_estimate_anything_is_refused(eps: float) -> None:
    for make in (lambda: MechanismParams(epsilon=eps), lambda: GRR(eps), lambda: OUE(eps)):
        with pytest.raises(ParameterError, match=r"epsilon must be at least 0\.01"):
            make()
    assert OLH(0.01).variance(1000, 10) < float("inf")  # the smallest accepted is finite
    status, err = _cli("simulate", "--epsilon", str(eps), "--quiet")
    assert status == 2 and err.startswith("fedhh: error: epsilon must be at least 0.01")
    assert len(err.splitlines()) == 1


def test_parameters_nested_too_deeply_are_a_protocol_error() -> None:
    deep = protocol_pb2.MechanismParams(json="[" * 100_000 + "]" * 100_000)
    with pytest.raises(ProtocolError, match="nested too deeply"):
        params_from_pb(deep)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('deadline_seconds = "soon"', "deadline_seconds must be a number"),
        ("deadline_seconds = -5", "deadline_seconds must be ≥ 0"),
        ("deadline_seconds = nan", "deadline_seconds must be ≥ 0"),
        ("run_id = 7", "run_id must be a string"),
    ],
)
def test_a_run_spec_with_a_bad_value_is_refused(tmp_path: Path, line: str, match: str) -> None:
    spec = tmp_path / "run.toml"
    spec.write_text(f'{line}\nparties = ["a"]\n')
    with pytest.raises(ParameterError, match=match):
        load_run_spec(spec)


def test_the_candidate_cap_is_inclusive() -> None:
    """The largest level_candidates a TAPS run accepts is 2^20 less the prior's items a level
    may add, and that run passes the default candidate limit of 2^20 (it was refused)."""
    with pytest.raises(ParameterError, match="at most 1048544 for taps with k = 16"):
        MechanismParams(mechanism="taps", k=16, m=32, level_candidates=1 << 20)
    top = MechanismParams(mechanism="taps", k=16, m=32, level_candidates=(1 << 20) - 32)
    admit_run(top, ["a", "b"], [10_000, 10_000], Limits())
    tap = MechanismParams(mechanism="tap", k=16, m=32, level_candidates=1 << 20)
    admit_run(tap, ["a", "b"], [10_000, 10_000], Limits())


def test_a_fifo_is_not_read_as_a_data_file(tmp_path: Path) -> None:
    fifo = tmp_path / "items"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        load_party_files([fifo], codec=StringCodec(4))  # (reading it would block for ever)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--poll-seconds", "-1"], "--poll-seconds must be in (0, 300]"),
        (["--poll-seconds", "nan"], "--poll-seconds must be in (0, 300]"),
        (["--ca-cert", "missing-ca.pem"], "--ca-cert missing-ca.pem: no such file"),
        (["--log-level", "bogus"], "argument --log-level: invalid choice: 'bogus'"),
    ],
)
def test_a_party_agent_refuses_bad_flags_before_it_connects(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    data = tmp_path / "items.txt"
    data.write_text("a\nb\n")
    argv = ["party", "serve", "--party-id", "p", "--coordinator", "127.0.0.1:9"]
    argv += ["--token-file", str(tmp_path / "none.token"), "--db", str(tmp_path / "a.sqlite")]
    with contextlib.chdir(tmp_path):
        status, err = _cli(*argv, "--data", str(data), "--item-bytes", "2", *extra)
    assert status == 2 and message in err and err.splitlines()[-1].startswith("fedhh: error:")
    assert not (tmp_path / "a.sqlite").exists()  # nothing was created


def test_a_run_whose_m_is_not_the_parties_is_refused_when_started(tmp_path: Path) -> None:
    from fedhh.server.state import CoordinatorState
    from fedhh.server.store import Store

    store = Store(tmp_path / "c.sqlite")
    state = CoordinatorState(store, 60.0)
    try:
        state.register("a", 500, "str:4", "data", {})
        with pytest.raises(ParameterError, match="asks m = 48 bits but party a's items have 32"):
            state.start_run("alice", "r", MechanismParams(m=48), ["a"], "continue", 60.0)
        assert state.store.runs(("waiting", "running", "failed")) == []  # nothing stored
    finally:
        state.close()
        store.close()
