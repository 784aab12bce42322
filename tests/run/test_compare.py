"""``fedhh compare`` as a researcher runs it (a real process): every mechanism, ε and seed on one
federation, each row what ``fedhh simulate`` gives for the same flags, the reference under the
same answer rule, a table, a JSON document and a PNG plot; bad lists refused in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from fedhh.datasets import synthetic_zipf
from fedhh.mechanisms.params import MechanismParams
from fedhh.run.engine import simulate

DATA = ["--users", "6000", "--parties", "3", "--items", "300", "--bits", "16", "-k", "4"]


def _fedhh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedhh.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_compare_runs_every_combination_as_simulate_would(tmp_path: Path) -> None:
    out, png = tmp_path / "c.json", tmp_path / "c.png"
    r = _fedhh(
        "compare", *DATA, "--mechanisms", "taps,pem-global", "--epsilons", "2,4",
        "--seeds", "0,1", "--reference-draws", "2", "--output", str(out), "--plot", str(png),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "every answer is the noise bar at α = 0.25" in r.stdout
    table = [ln.split()[0] for ln in r.stdout.splitlines()[4:]]
    assert table == ["taps", "pem-global", "reference"], r.stdout
    doc = json.loads(out.read_text())
    rows = doc["rows"]
    runs = [(x["mechanism"], x["epsilon"], x["seed"]) for x in rows]
    assert len(runs) == 2 * 2 * 2 + 2 * 2 and len(set(runs)) == len(runs)
    ds = synthetic_zipf(6000, 3, m=16, n_items=300, seed=0)  # --data-seed 0, as compare loads it
    for mech, eps, seed in [("taps", 4.0, 1), ("pem-global", 2.0, 0)]:
        params = MechanismParams(mechanism=mech, epsilon=eps, k=4, m=16, seed=seed)
        res = simulate(ds.parties, ds.codec, params)
        want = ds.evaluate(res.items, res.estimates, 4)
        got = next(
            x for x in rows if (x["mechanism"], x["epsilon"], x["seed"]) == (mech, eps, seed)
        )
        assert got["f1"] == want.f1 and got["ncr"] == want.ncr, (got, want)
    summary = {(s["mechanism"], s["epsilon"]): s for s in doc["summary"]}
    taps2 = [x["f1"] for x in rows if x["mechanism"] == "taps" and x["epsilon"] == 2.0]
    assert summary[("taps", 2.0)]["f1_mean"] == np.mean(taps2) and summary[("taps", 2.0)]["n"] == 2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_refuses_bad_lists_in_one_line(tmp_path: Path) -> None:
    for flags, message in [
        (["--epsilons", "2,x"], "--epsilons: expected a comma-separated list"),
        (["--seeds", "1,1"], "--seeds: give one or more distinct values"),
        (["--mechanisms", "taps,nope"], "nope"),
        (["--output", str(tmp_path / "missing" / "c.json")], "is not a directory"),
    ]:
        r = _fedhh("compare", *DATA, "--reference-draws", "0", *flags)
        assert r.returncode == 2, (flags, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert lines[-1].startswith("fedhh: error: ") and message in lines[-1], (flags, r.stderr)
        assert "Traceback" not in r.stderr
