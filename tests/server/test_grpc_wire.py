"""The wire contract: generated code is fresh, converters round-trip every protocol message, and
the user SDK's reports are what the party agent aggregates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedhh.clients.device_wire import ReportFields, reports_from_pb
from fedhh.clients.devices import check_single_report
from fedhh.clients.reporter import ReportTask, make_report
from fedhh.errors import ProtocolError, ReportError
from fedhh.mechanisms.local import estimate_reports
from fedhh.oracles import GRR, OLH, OUE, OLHPool, Reports
from fedhh.protocol import Request, encoding
from fedhh.wire import codegen
from fedhh.wire.v1 import protocol_pb2, report_pb2


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    fresh = codegen.generate(tmp_path / "v1")
    checked_in = sorted(p.name for p in codegen.PACKAGE_DIR.iterdir() if p.is_file())
    assert sorted(p.name for p in fresh) == checked_in, "run `make proto`"
    for f in fresh:
        assert f.read_text() == (codegen.PACKAGE_DIR / f.name).read_text(), (
            f"fedhh/wire/v1/{f.name} is stale against protos/fedhh/v1: run `make proto`"
        )


def test_malformed_arrays_are_refused() -> None:
    good = encoding.array_to_pb(np.arange(4, dtype=np.uint64))
    for dtype, shape, data in (
        ("uint64", [4], good.data[:-1]),
        ("object", [4], good.data),
        ("uint64", [2, 2], good.data),
        ("uint64", [-4], good.data),
        ("uint64", [1 << 30], good.data),
    ):
        msg = protocol_pb2.NDArray(dtype=dtype, shape=shape, data=data)
        with pytest.raises(ProtocolError):
            encoding.array_from_pb(msg, "x", "uint64")
    with pytest.raises(ProtocolError):
        encoding.from_pb(Request, protocol_pb2.Request(run_id="r"))
    with pytest.raises(ProtocolError, match="epsilon"):
        encoding.params_from_pb(protocol_pb2.MechanismParams(json='{"epsilon": -1}'))
    with pytest.raises(ProtocolError, match="unknown run parameter"):
        encoding.params_from_pb(protocol_pb2.MechanismParams(json='{"nope": 1}'))


@pytest.mark.parametrize(
    "oracle",
    [GRR(3.0), OUE(3.0), OLH(3.0), OLHPool(3.0, pool_size=64, pool_seed=9)],
    ids=lambda o: o.name,
)
def test_device_reports_estimate_like_the_party(oracle) -> None:  # type: ignore[no-untyped-def]
    """Reports made one by one on devices (Report messages, wire version 2) aggregate to
    unbiased estimates (5-sigma check); both task versions carry the same task."""
    m, length = 8, 4
    cand = np.arange(16, dtype=np.uint64)
    made = ReportTask.for_oracle("r", 3, m, length, "int:8", oracle, cand)
    task = ReportTask.from_pb(made.to_pb(2))
    old = ReportTask.from_pb(made.to_pb(1))
    assert np.array_equal(task.candidates, old.candidates)
    assert len(made.to_pb(2).candidate_keys) == made.candidates.size
    assert not made.to_pb(2).HasField("candidates") and not made.to_pb(1).candidate_keys
    rng = np.random.default_rng(0)
    items = np.where(rng.random(3000) < 0.4, 0x35, rng.integers(0, 256, 3000))
    msgs = [make_report(task, int(x), rng) for x in items]
    layout = oracle.report_layout(cand.size)
    fields = ReportFields(layout)
    frames = [fields.frame(report_pb2.Report.FromString(m.SerializeToString())) for m in msgs]
    for b in frames[:5]:  # the frame stored is one canonical version-1 report
        check_single_report(b, oracle, task.candidates if task.candidates.size else cand)
    reports = reports_from_pb(msgs, layout)
    parts = [Reports.from_bytes(b) for b in frames]
    for k, arr in reports.arrays.items():
        assert np.array_equal(arr, np.concatenate([p.arrays[k] for p in parts]))
    res = estimate_reports(reports, length, cand, oracle, 3000)
    truth = np.bincount(items.astype(np.int64) >> (m - length), minlength=16)
    z = (res.estimates - truth) / res.stderrs
    assert np.all(np.abs(z) < 5), z
    assert res.cost.reports == 3000
    with pytest.raises(ReportError):
        check_single_report(frames[0] + b"x", oracle, cand)
    with pytest.raises(ReportError):
        check_single_report(reports.take(slice(0, 2)).to_bytes(), oracle, cand)
