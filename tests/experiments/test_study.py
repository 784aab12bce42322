"""The study runner (experiments/study.py) end to end on a tiny config, and its summary rules."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
STUDY = ROOT / "experiments" / "study.py"
sys.path.insert(0, str(STUDY.parent))

from study_io import REFERENCE  # noqa: E402
from study_plan import Group, only_labels, runs_at  # noqa: E402
from study_report import compare, summarise  # noqa: E402

CONFIG = """
[study]
name = "smoke"
repeats = 1
users = 3000

[grid]
epsilon = [2.0, 4.0]
k = [4]

[mechanisms]
"TAPS" = { mechanism = "taps" }
"TAP" = { mechanism = "tap" }
"PEM-Local" = { mechanism = "pem-local" }
"PEM-Global" = { mechanism = "pem-global" }

[tuning]
labels = ["PEM-Local", "PEM-Global"]
eta = [2, 4]

[reference]
draws = 3

[ablations.points]
epsilon = [4.0]
k = [4]

[ablations.runs]
"TAPS + completion" = { mechanism = "taps", completion = 0.1 }

[datasets.dir]
kind = "zipf"
items = 200
m = 16
alpha = 0.1

[datasets.iid]
kind = "zipf"
items = 200
m = 16
split = "iid"
"""
# per dataset: 2 points × (reference + 4 mechanisms + 2 baselines × 1 η besides their own η = 4)
# + 1 ablation
EXPECTED_ROWS = 2 * (2 * (1 + 4 + 2) + 1)


def _study(cfg: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, str(STUDY), str(cfg), "--out", str(out), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_study_runs_summarises_and_resumes(tmp_path: Path) -> None:
    cfg = tmp_path / "smoke.toml"
    cfg.write_text(CONFIG)
    out = tmp_path / "out"
    first = _study(cfg, out, "--jobs", "2")
    assert f"{EXPECTED_ROWS} to run" in first.stderr
    rows = _rows(out / "runs.csv")
    assert len(rows) == EXPECTED_ROWS
    assert {r["dataset"] for r in rows} == {"dir", "iid"}
    assert all(float(r["wall_seconds"]) >= 0 for r in rows)
    assert {r["label"] for r in rows if r["family"] == "PEM-Local"} == {
        "PEM-Local",  # its own run is η = 4
        "PEM-Local η=2",
    }
    md = (out / "summary.md").read_text()
    for part in ("## (a) F1 per dataset", "### dir", "PEM-Local tuned", "(η=", "reference"):
        assert part in md
    # every run, the reference too, is answered under the noise bar and with its top-k: the
    # bar's answer is a part of the top-k, so it finds no more true items
    assert "passes the noise bar" in md and "plain top-k" in (out / "summary_topk.md").read_text()
    for r in rows:
        assert float(r["recall"]) <= float(r["topk_recall"]), r
    assert any(float(r["precision"]) > float(r["topk_precision"]) for r in rows)
    assert "## (b) Against the better tuned baseline" in md and "## (c) Wins" in md
    for ds in ("dir", "iid"):
        assert (out / f"{ds}_f1_eps_k4.png").stat().st_size > 0
    summary = _rows(out / "summary.csv")
    tuned = [s for s in summary if s["label"] == "PEM-Global tuned"]
    assert len(tuned) == 4
    assert all(s["tuned_from"] in ("PEM-Global", "PEM-Global η=2") for s in tuned)

    # an interrupted study: the last runs are missing; a restart runs exactly those again
    lost = rows[-3:]
    with (out / "runs.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows[:-3])
    second = _study(cfg, out, "--jobs", "1")
    assert f"{EXPECTED_ROWS - 3} already in" in second.stderr and "3 to run" in second.stderr
    reproduce = f"reproduce: .venv/bin/python experiments/study.py {cfg} --out {out} --jobs 1"
    assert reproduce in second.stderr  # the flags given, not the config alone
    again = _rows(out / "runs.csv")
    assert again[:-3] == rows[:-3]
    key = ("dataset", "label", "epsilon", "k", "rep")
    redone = {tuple(r[c] for c in key): r for r in again[-3:]}
    for r in lost:  # seeded: the same results
        assert redone[tuple(r[c] for c in key)]["f1"] == r["f1"]
    third = _study(cfg, out)
    assert "0 to run" in third.stderr
    assert len(_rows(out / "runs.csv")) == EXPECTED_ROWS

    md = (out / "summary.md").read_text()  # the redone runs took other wall times
    (out / "summary.md").unlink()
    _study(cfg, out, "--summarise-only")
    assert (out / "summary.md").read_text() == md


def _summary(label: str, mean: float, std: float, n: int = 5) -> dict[str, object]:
    return {"label": label, "f1_mean": mean, "f1_std": std, "n": n}


@pytest.mark.parametrize(
    ("a", "b", "verdict"),
    [
        ((0.90, 0.02), (0.80, 0.02), "win"),  # 0.10 > 2 · 0.0126
        ((0.80, 0.02), (0.90, 0.02), "loss"),
        ((0.82, 0.05), (0.80, 0.05), "tie"),  # 0.02 < 2 · 0.0316
        ((0.75, 0.0), (0.75, 0.0), "tie"),
    ],
)
def test_compare_at_two_standard_errors(
    a: tuple[float, float], b: tuple[float, float], verdict: str
) -> None:
    mean, se, got = compare(_summary("x", *a), _summary("y", *b))
    assert got == verdict
    assert mean == pytest.approx(a[0] - b[0])
    assert se == pytest.approx(((a[1] ** 2 + b[1] ** 2) / 5) ** 0.5)


def test_tuned_baseline_takes_the_best_mean_f1() -> None:
    rows = []
    for eta, f1s in ((4, (0.5, 0.6)), (8, (0.8, 0.7)), (12, (0.75, 0.75))):
        for rep, f in enumerate(f1s):
            rows.append(
                {
                    "dataset": "d",
                    "parties": 8,
                    "k": 16,
                    "epsilon": 2.0,
                    "label": f"B η={eta}",
                    "family": "B",
                    "eta": eta,
                    "rep": rep,
                    "f1": f,
                }
            )
    cfg = {"tuning": {"labels": ["B"]}, "mechanisms": {"B": {"mechanism": "pem-local"}}}
    summary = summarise(rows, cfg)
    tuned = [s for s in summary if s["label"] == "B tuned"]
    assert len(tuned) == 1 and tuned[0]["eta"] == 8 and tuned[0]["tuned_from"] == "B η=8"
    assert tuned[0]["f1_mean"] == pytest.approx(0.75) and tuned[0]["n"] == 2
    # the baseline's own run (no "eta": the default η = 4) takes part in the sweep as η = 4
    own = [{**r, "label": "B", "eta": None, "f1": 0.9} for r in rows if r["eta"] == 4]
    summary = summarise([r for r in rows if r["eta"] != 4] + own, cfg)
    tuned = [s for s in summary if s["label"] == "B tuned"]
    assert tuned[0]["eta"] == 4 and tuned[0]["tuned_from"] == "B"


def test_tuning_sweep_at_chosen_k_and_a_short_one_elsewhere() -> None:
    cfg = {
        "mechanisms": {"B": {"mechanism": "pem-local"}},
        "tuning": {"labels": ["B"], "eta": [4, 8, 12], "k": [16], "eta_other": [12]},
        "reference": {"draws": 0},
    }
    at16 = {r.label for r in runs_at(cfg, 2.0, 16)}
    at8 = {r.label for r in runs_at(cfg, 2.0, 8)}
    assert at16 == {"B", "B η=8", "B η=12"}  # η = 4 is B's own run
    assert at8 == {"B", "B η=12"}


def test_only_labels_keeps_a_family_with_its_sweep_and_refuses_unknown_labels() -> None:
    cfg = {
        "mechanisms": {"A": {"mechanism": "taps"}, "B": {"mechanism": "pem-local"}},
        "tuning": {"labels": ["B"], "eta": [4, 8]},
        "reference": {"draws": 3},
    }
    groups = [Group("d", 8, 0, runs_at(cfg, 2.0, 16)), Group("e", 8, 0, runs_at(cfg, 1.0, 16))]
    kept = only_labels(groups, ["reference", "B"])
    assert [g.dataset for g in kept] == ["d", "e"]
    assert {r.label for r in kept[0].runs} == {"reference", "B", "B η=8"}
    assert [r.label for r in only_labels(groups, ["A"])[1].runs] == ["A"]
    with pytest.raises(SystemExit, match="unknown labels"):
        only_labels(groups, ["A", "Z"])


def test_held_out_baseline_chooses_on_the_other_repeats() -> None:
    """Leave one out: each repeat is scored by the configuration best on the other repeats."""
    f1 = {  # label → F1 per repeat 0..2
        "B η=4": (0.9, 0.1, 0.1),  # best in hindsight at repeat 0 only
        "B η=8": (0.5, 0.5, 0.5),
        "C η=4": (0.2, 0.6, 0.6),
    }
    rows = [
        {
            "dataset": "d",
            "parties": 8,
            "k": 16,
            "epsilon": 2.0,
            "label": lab,
            "family": lab.split()[0],
            "eta": int(lab.split("=")[1]),
            "rep": rep,
            "f1": v,
        }
        for lab, vals in f1.items()
        for rep, v in enumerate(vals)
    ]
    cfg = {
        "tuning": {"labels": ["B", "C"]},
        "mechanisms": {"B": {"mechanism": "pem-local"}, "C": {"mechanism": "pem-global"}},
    }
    held = [s for s in summarise(rows, cfg) if s["label"] == "baseline held-out"]
    assert len(held) == 1 and held[0]["n"] == 3
    # rep 0: others' means B4 0.1, B8 0.5, C4 0.6 → C η=4 scores 0.2; rep 1: B4 0.5, B8 0.5,
    # C4 0.4 → B η=4 (first of the tie) scores 0.1; rep 2: same as rep 1 → B η=4 scores 0.1
    assert held[0]["tuned_from"] == "C η=4, B η=4, B η=4"
    assert held[0]["f1_mean"] == pytest.approx((0.2 + 0.1 + 0.1) / 3)


def test_the_study_takes_party_files_and_every_dataset_kind(tmp_path: Path) -> None:
    """A study dataset is loaded as ``fedhh simulate`` loads it: party files (their own parties,
    whatever the grid's) and the URL federation too."""
    rng = np.random.default_rng(3)
    words = [f"https://example.org/{w}/page-{w * 7}" for w in range(40)]  # > 8 bytes each
    files = []
    for i, n in enumerate((700, 500, 300)):
        f = tmp_path / f"party-{i}.txt"
        f.write_text("".join(words[j] + "\n" for j in rng.zipf(1.6, n) % len(words)))
        files.append(str(f))
    cfg = tmp_path / "kinds.toml"
    cfg.write_text(
        "\n".join(
            [
                '[study]\nname = "kinds"\nrepeats = 1\nusers = 2000',
                "[grid]\nepsilon = [4.0]\nk = [4]\nparties = [2]",
                '[mechanisms]\n"TAPS" = { mechanism = "taps" }',
                "[reference]\ndraws = 2",
                f'[datasets.files]\nkind = "files"\nfiles = {json.dumps(files)}\nitem_bytes = 40',
                '[datasets.urls]\nkind = "urls"\nitems = 300',
            ]
        )
        + "\n"
    )
    out = tmp_path / "out"
    _study(cfg, out)
    rows = _rows(out / "runs.csv")
    by = {(r["dataset"], r["label"]): r for r in rows}
    assert set(by) == {(d, lb) for d in ("files", "urls") for lb in ("TAPS", REFERENCE)}
    assert by[("files", "TAPS")]["n_parties"] == "3" and by[("files", "TAPS")]["users"] == "1500"
    assert by[("urls", "TAPS")]["n_parties"] == "2" and by[("urls", "TAPS")]["users"] == "2000"
    assert all(0.0 <= float(r["f1"]) <= 1.0 for r in rows)
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg.read_text().replace('kind = "files"', 'kind = "zipf"'))
    proc = subprocess.run(
        [sys.executable, str(STUDY), str(bad), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode != 0 and "files = [...] goes with kind = 'files'" in proc.stderr


def test_a_study_at_a_central_target_records_each_runs_eps0(tmp_path: Path) -> None:
    """``[params] central_epsilon``: every run gets the largest ε₀ up to the grid's ε that meets
    the target (the reference at its smallest party); runs.csv records ε₀ and the run's ε_c, and
    a runs file written before those columns is appended to with its own."""
    from study_io import OLD_FIELDS

    from fedhh.core.privacy import shuffle_epsilon

    cfg = tmp_path / "central.toml"
    cfg.write_text(
        '[study]\nname = "c"\nrepeats = 1\nusers = 20000\n[grid]\nepsilon = [10.0]\nk = [4]\n'
        "[params]\ncentral_epsilon = 1.0\ncentral_delta = 1e-8\n"
        '[mechanisms]\n"TAPS" = { mechanism = "taps" }\n[reference]\ndraws = 2\n'
        '[datasets.iid]\nkind = "zipf"\nitems = 200\nm = 16\nsplit = "iid"\n'
    )
    out = tmp_path / "out"
    _study(cfg, out, "--jobs", "1")
    rows = {r["label"]: r for r in _rows(out / "runs.csv")}
    taps, ref = rows["TAPS"], rows[REFERENCE]
    assert 0.01 < float(taps["epsilon0"]) < 10.0 and float(taps["central_epsilon"]) <= 1.0
    eps0 = float(ref["epsilon0"])  # 8 iid parties of 2,500 users each
    assert shuffle_epsilon(2500, eps0, 1e-8) <= 1.0 < shuffle_epsilon(2500, eps0 + 0.001, 1e-8)
    assert float(ref["central_epsilon"]) == pytest.approx(shuffle_epsilon(2500, eps0, 1e-8))

    old = tmp_path / "old"
    old.mkdir()
    with (old / "runs.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=OLD_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerow(taps)
    again = _study(cfg, old, "--jobs", "1")
    assert "1 already in" in again.stderr
    with (old / "runs.csv").open(newline="") as fh:
        assert tuple(next(csv.reader(fh))) == OLD_FIELDS
    assert len(_rows(old / "runs.csv")) == 2
