"""The JavaScript device client (clients-js), written from report.proto and docs/device-wire.md,
against the Python implementation, in node:

* its deterministic steps (item codes, prefixes, fingerprints, candidate symbols, OLH hashes,
  the seed pool) give exactly the Python values, for every oracle and both codecs;
* its reports, decoded and checked by the endpoint's own ReportFields, estimate every oracle's
  counts without bias (5-sigma z-test from the oracle's variance formula, fixed seed);
* real processes on 127.0.0.1: 300 JS devices report to a party agent's endpoint during a
  PEM-Global run (or a JS relay submits their batches), each counted once; the party's reply
  of every level is exactly what the Python path gives from the stored JS reports, which are
  within 5 sigma of the truth, and the run finds the dominant item; malformed reports and a
  bad credential get the precise refusal as the JS client's typed error, nothing stored.

The JS client draws from its seeded SplitMix64 stream here (its documented test mode), not
numpy's generator, so its reports are compared statistically, not byte for byte."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from grpc_harness import Cluster, running_cluster, wait_until

from fedhh.clients.device_wire import ReportFields, reports_from_pb
from fedhh.clients.reporter import ReportTask, item_key
from fedhh.core import codes as cd
from fedhh.mechanisms.local import estimate_reports
from fedhh.mechanisms.params import MechanismParams
from fedhh.mechanisms.tasks import EstimateResult
from fedhh.oracles import GRR, OLH, OUE, FrequencyOracle, OLHPool, Reports
from fedhh.oracles.affine import OLHAffine, hash_rows
from fedhh.oracles.affine_decode import parity_hash
from fedhh.oracles.base import candidate_index
from fedhh.oracles.hashing import HashKeys, bucket_of, hash32
from fedhh.protocol.encoding import decode_reply, decode_request
from fedhh.wire.v1 import report_pb2

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "clients-js"
CLI = JS / "bin" / "fedhh-report.js"
NODE = shutil.which("node")
ORACLES = [
    GRR(2.0),
    OUE(2.0),
    OLH(3.0),
    OLHPool(3.0, pool_size=64, pool_seed=2**63 + 5),
    OLHAffine(3.0),
]

pytestmark = pytest.mark.skipif(NODE is None, reason="node (20) is not installed")


@pytest.fixture(scope="module", autouse=True)
def js_installed() -> None:
    assert (JS / "node_modules" / "@grpc" / "grpc-js").is_dir(), "run `make install-dev`"


def node(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
    assert NODE is not None
    return subprocess.run([NODE, str(CLI), *args], capture_output=True, timeout=timeout)


def write_task(tmp: Path, task: ReportTask) -> Path:
    path = tmp / "task.bin"
    path.write_bytes(task.to_pb(2).SerializeToString())
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{x}\n" for x in lines))
    return path


@pytest.mark.parametrize("oracle", ORACLES, ids=lambda o: o.name)
@pytest.mark.parametrize(
    ("codec", "length", "items"),
    [
        ("int:16", 9, ["0", "65535", "1234", "77"]),
        ("str:14", 70, ["héllo wörld", "a", "zzzzzzzzzzzzzz", "日本語"]),  # a fingerprinted key
        ("str:4", 32, ["abcd", "ab", "\u00e9t"]),
    ],
)
def test_the_deterministic_steps_are_the_pythons(
    tmp_path: Path, oracle: FrequencyOracle, codec: str, length: int, items: list[str]
) -> None:
    m = 16 if codec == "int:16" else 8 * int(codec.split(":")[1])
    conv = int if codec.startswith("int") else str
    probe = ReportTask("r", 1, m, length, codec, "olh", 1.0, g=2)
    keys = [item_key(probe, conv(x)) for x in items]
    cand = np.array([keys[0], keys[1], 7, 2**64 - 1], dtype=np.uint64)
    task = ReportTask.for_oracle("r", 1, m, length, codec, oracle, cand)
    seeds = [0, 1, 2**64 - 1, 12345678901234567890]
    done = node(
        "keys",
        *("--task", str(write_task(tmp_path, task))),
        *("--items", str(write_lines(tmp_path / "items.txt", items))),
        *("--seeds", ",".join(map(str, seeds))),
    )
    assert done.returncode == 0, done.stderr.decode()
    rows = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [int(r["key"]) for r in rows] == keys
    if oracle.needs_candidates:
        want = candidate_index(np.array(keys, dtype=np.uint64), task.candidates)
        assert [r["symbol"] for r in rows] == want.tolist()
        return
    g = int(oracle.parameters()["g"])
    hashes = HashKeys.from_seeds(np.array(seeds, dtype=np.uint64))
    for key, row in zip(keys, rows, strict=True):
        if isinstance(oracle, OLHAffine):  # the affine hash A·key ⊕ b of each seed
            rows_, offsets = hash_rows(np.array(seeds, dtype=np.uint64), oracle.rows)
            assert row["buckets"] == (parity_hash(rows_, np.uint64(key)) ^ offsets).tolist()
            continue
        assert row["buckets"] == bucket_of(hash32(hashes, np.uint64(key)), g).tolist()
        if isinstance(oracle, OLHPool):
            pool = oracle.pool_keys.take(np.arange(16))
            assert row["pool_buckets"] == bucket_of(hash32(pool, np.uint64(key)), g).tolist()


def variance(oracle: FrequencyOracle, n: int, d: int, truth: np.ndarray) -> np.ndarray:
    """The variance formula of each count (the seed pool's with its collision term)."""
    if isinstance(oracle, OLHPool):
        mass = float((truth * (truth - 1)).sum()) - truth * (truth - 1)
        return np.array(
            [oracle.variance(n, d, float(c), float(x)) for c, x in zip(truth, mass, strict=True)]
        )
    return oracle.variance(n, d, truth.astype(np.float64))


def z_scores(oracle: FrequencyOracle, reports: Reports, keys: np.ndarray, truth: np.ndarray):  # type: ignore[no-untyped-def]
    est = oracle.estimate(reports, keys)
    return (est - truth) / np.sqrt(variance(oracle, reports.n, keys.size + 1, truth))


@pytest.mark.parametrize("oracle", ORACLES, ids=lambda o: o.name)
def test_js_reports_estimate_without_bias(tmp_path: Path, oracle: FrequencyOracle) -> None:
    """4000 JS reports of known items, checked field by field as the endpoint checks them,
    estimate each candidate's count within 5 sigma (fixed seed)."""
    m, length, n = 8, 5, 4000
    cand = np.arange(0, 32, 2, dtype=np.uint64)  # half the prefixes: the rest are "other"
    task = ReportTask.for_oracle("r", 2, m, length, "int:8", oracle, cand)
    rng = np.random.default_rng(4)
    items = np.where(rng.random(n) < 0.3, 0x4C, rng.integers(0, 256, n))
    done = node(
        "perturb",
        *("--task", str(write_task(tmp_path, task))),
        *("--items", str(write_lines(tmp_path / "items.txt", [str(x) for x in items]))),
        *("--seed", "17"),
    )
    assert done.returncode == 0, done.stderr.decode()
    batch = report_pb2.ReportBatch.FromString(done.stdout)
    assert len(batch.reports) == n
    reports = reports_from_pb([e.ldp_report for e in batch.reports], oracle.report_layout(16))
    truth = np.bincount(items >> (m - length), minlength=32)[cand.astype(np.int64)]
    z = z_scores(oracle, reports, cand, truth.astype(np.float64))
    assert np.all(np.abs(z) < 5), z


def joined(frames: list[bytes]) -> Reports:
    """One batch of the reports an agent stored (one frame a report)."""
    parts = [Reports.from_bytes(f) for f in frames]
    arrays = {k: np.concatenate([p.arrays[k] for p in parts]) for k in parts[0].arrays}
    return Reports(parts[0].kind, parts[0].size, arrays)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path, ["party-0"]) as c:
        yield c


USERS = 300
DOMINANT = 77


@pytest.mark.parametrize(
    ("oracle", "mode"),
    [("grr", ("--concurrency", "16")), ("olh-pool", ("--batch", "40"))],
    ids=["grr-devices", "olh-pool-relay"],
)
def test_js_devices_report_to_a_party_agent(
    cluster: Cluster, oracle: str, mode: tuple[str, str]
) -> None:
    """One JS device a user (16 at a time), or a JS relay submitting batches of 40."""
    cluster.start_coordinator()
    creds = cluster.enroll("party-0", USERS)
    _, target = cluster.start_device_party("party-0", USERS, "--collect-seconds", "60")
    params = MechanismParams(
        mechanism="pem-global", k=2, m=8, epsilon=4.0, seed=1, oracle=oracle, pool_size=256
    )
    done = cluster.start_run("js-1", ["party-0"], params)
    assert done.returncode == 0, done.stderr
    ca = str(cluster.certs.ca)
    tls = ("--target", target, "--ca-cert", ca)

    # Malformed reports and a bad credential: the precise refusal, as the client's typed error.
    layout_case = "olh_pool" if oracle == "olh-pool" else oracle
    field, wrong_case = ("symbol", "olh") if oracle == "grr" else ("seed_index", "grr")
    for report, error, why in (
        ({layout_case: {}}, "ReportRefused", f"report field {layout_case}.{field} is missing"),
        ({layout_case: {field: 1 << 30, "bucket": 0}}, "ReportRefused", "out of range"),
        ({wrong_case: {"symbol": 0}}, "ReportRefused", f"wants a {layout_case} report, got"),
        ({}, "ReportRefused", f"wants a {layout_case} report, got none"),
    ):
        got = node("submit", *tls, "--credential", creds["0"], "--report", json.dumps(report))
        out = json.loads(got.stdout)
        assert (out["error"], out["code"]) == (error, "INVALID_ARGUMENT"), out
        assert why in out["message"], out
    forged = creds["0"][:-2] + ("AA" if not creds["0"].endswith("AA") else "BB")
    got = json.loads(node("submit", *tls, "--credential", forged, "--report", "{}").stdout)
    assert (got["error"], got["code"]) == ("BadCredential", "UNAUTHENTICATED"), got

    rng = np.random.default_rng(11)
    items = np.where(rng.random(USERS) < 0.5, DOMINANT, rng.integers(0, 256, USERS))
    cred_file = cluster.root / "party-0.credentials"
    item_file = write_lines(cluster.root / "items.tsv", [f"{u}\t{x}" for u, x in enumerate(items)])
    tasks = cluster.root / "tasks"
    got = node(
        "report",
        *tls,
        *("--credentials", str(cred_file), "--items", str(item_file)),
        *("--seed", "5", *mode, "--save-tasks", str(tasks)),
    )
    assert got.returncode == 0, got.stderr.decode()
    summary = json.loads(got.stdout)
    assert summary["outcomes"] == {"accepted": USERS}, summary

    info = wait_until(
        lambda: (
            (s := json.loads(cluster.query("status", "js-1").stdout))["state"] != "running" and s
        ),
        what="the run to end",
    )
    assert info["state"] == "done", info
    top = json.loads(cluster.query("top", "js-1").stdout)
    assert top[0]["code"] == DOMINANT
    cost = json.loads(cluster.query("cost", "js-1").stdout)["cost"]
    assert cost["reports_per_party"] == {"party-0": USERS}

    # Each level's estimate from exactly the stored JS reports is right within 5 sigma.
    db = sqlite3.connect(cluster.root / "party-0.sqlite")
    rows = db.execute("SELECT user_id, task_id, report FROM reports WHERE run_id='js-1'").fetchall()
    assert sorted(int(r[0]) for r in rows) == list(range(USERS))  # each user once
    for path in sorted(tasks.glob("task-*.bin")):
        task = ReportTask.from_pb(report_pb2.ReportTask.FromString(path.read_bytes()))
        assert task.oracle == oracle
        mine = [r for r in rows if r[1] == task.task_id]
        reports = joined([r[2] for r in mine])
        built = task.build_oracle()
        keys = task.candidates if task.candidates.size else np.arange(1 << task.length)
        keys = np.asarray(keys, dtype=np.uint64)
        users = np.array([int(r[0]) for r in mine])
        prefixes = cd.prefix(items[users].astype(np.uint64), 8, task.length)
        truth = np.array([(prefixes == k).sum() for k in keys], dtype=np.float64)
        assert ReportFields(built.report_layout(keys.size)).layout.kind == reports.kind
        z = z_scores(built, reports, keys, truth)
        assert np.all(np.abs(z) < 5), (task.task_id, z)
    assert len(list(tasks.glob("task-*.bin"))) == len(cost["levels"])

    # The party's estimates (its replies, as it stored them) are exactly what the same JS
    # reports give through the Python path (fedhh.mechanisms.local.estimate_reports).
    answered = db.execute(
        "SELECT request, reply FROM handled WHERE run_id='js-1' ORDER BY request_id"
    ).fetchall()
    checked = 0
    for req_bytes, reply_bytes in answered:
        request, reply = decode_request(req_bytes), decode_reply(reply_bytes)
        if not isinstance(reply.result, EstimateResult):
            continue
        task = ReportTask.from_pb(
            report_pb2.ReportTask.FromString(
                (tasks / f"task-{request.request_id}.bin").read_bytes()
            )
        )
        reports = joined([r[2] for r in rows if r[1] == request.request_id])
        cand = request.task.candidates
        want = estimate_reports(reports, task.length, cand, task.build_oracle(), USERS)
        assert np.array_equal(want.estimates, reply.result.estimates)
        assert np.array_equal(want.stderrs, reply.result.stderrs)
        checked += 1
    assert checked == len(cost["levels"])
