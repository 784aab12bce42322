"""`fedhh simulate` end to end, as a user runs it (a real process), and its error handling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedhh.cli import main
from fedhh.core.items import display
from fedhh.errors import ParameterError, RunFailed, TransportError


def _fedhh(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedhh.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture(scope="module")
def party_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three parties of word-like items with different local favourites (non-IID)."""
    rng = np.random.default_rng(0)
    words = [f"w{i:03d}" for i in range(300)]
    weights = np.arange(1, 301, dtype=float) ** -1.3
    out = []
    root = tmp_path_factory.mktemp("parties")
    for p in range(3):
        w = np.roll(weights, 7 * p)
        items = rng.choice(words, size=8000, p=w / w.sum())
        path = root / f"party{p}.txt"
        path.write_text("\n".join(items) + "\n")
        out.append(path)
    return out


def test_simulate_party_files_end_to_end(party_files: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    args = ["simulate", "--item-bytes", "4", "-k", "5", "--epsilon", "6", "--output", str(out)]
    for f in party_files:
        args += ["--party-file", str(f)]
    proc = _fedhh(*args)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["format"] == "fedhh.result/1" and doc["mechanism"] == "taps"
    assert len(doc["top_k"]) == 5
    counts: dict[str, int] = {}
    for f in party_files:
        for line in f.read_text().split():
            counts[line] = counts.get(line, 0) + 1
    truth = sorted(counts, key=lambda w: -counts[w])[:5]
    returned = [row["item"] for row in doc["top_k"]]
    assert len(set(returned) & set(truth)) >= 4
    assert doc["evaluation"]["f1"] >= 0.8
    assert doc["cost"]["rounds"] >= 1 and doc["privacy"]["epsilon"] == 6.0
    assert sum(doc["cost"]["reports_per_party"].values()) <= 3 * 8000
    assert "rank" in proc.stdout and returned[0] in proc.stdout  # the terminal table
    ref = doc["evaluation"]["reference"]  # the known-domain reference, 20 draws by default
    assert ref["draws"] == 20 and ref["domain"] == len(counts) and 0.8 <= ref["f1"] <= 1.0
    assert "known-domain reference: F1" in proc.stdout
    assert doc["dataset"]["parties"] == 3 and doc["dataset"]["users"] == 3 * 8000


def test_simulate_default_runs(tmp_path: Path) -> None:
    assert (
        main(["simulate", "--users", "20000", "--quiet", "--output", str(tmp_path / "r.json")]) == 0
    )
    doc = json.loads((tmp_path / "r.json").read_text())
    assert 1 <= len(doc["top_k"]) <= 16 and doc["params"]["mechanism"] == "taps"
    # the level plan the run followed: every party's levels reach m and use all its users
    plan = doc["plan"]
    assert plan["rule"] == "planned" and plan["level_candidates"] == 1 << 17
    assert plan["shared"] and plan["shared"][0] == 17
    sizes = doc["dataset"]["party_sizes"]
    for i, (pid, levels) in enumerate(sorted(plan["parties"].items())):
        assert levels["lengths"][-1] == doc["params"]["m"]
        assert levels["lengths"] == sorted(levels["lengths"])
        assert sum(levels["users"]) == sizes[i], pid
        assert all(c <= 2 * plan["level_candidates"] for c in levels["candidates"])


def test_simulate_with_a_central_target_and_a_central_cap(tmp_path: Path) -> None:
    """--central-epsilon/--central-delta choose ε₀ (within --epsilon, the most allowed); the
    result document states it, the groups' (ε_c, δ) and each party's budget after the run;
    --max-central-epsilon refuses a run over it before any work (exit 2, one line)."""
    from fedhh.core.privacy import shuffle_epsilon
    from fedhh.mechanisms.params import MechanismParams
    from fedhh.protocol.admission import smallest_group

    out = tmp_path / "c.json"
    argv = ["simulate", "--users", "20000", "--quiet", "--epsilon", "8"]
    assert (
        main([*argv, "--central-epsilon", "1.5", "--central-delta", "1e-7", "--output", str(out)])
        == 0
    )
    doc = json.loads(out.read_text())
    eps0, privacy = doc["params"]["epsilon"], doc["privacy"]
    assert eps0 < 8 and privacy["epsilon"] == eps0 and privacy["central"]["delta"] == 1e-7
    p = MechanismParams.from_dict(doc["params"])
    floor = min(smallest_group(p, n) for n in doc["dataset"]["party_sizes"])
    assert shuffle_epsilon(floor, eps0, 1e-7) <= 1.5 < shuffle_epsilon(floor, eps0 + 0.001, 1e-7)
    assert {b["epsilon_remaining"] for b in privacy["budgets"].values()} == {40 - eps0}
    # towards the coordinator the run cost each party's users its worst group's ε_c there
    for pid, b in privacy["budgets"].items():
        worst = max(g["central_epsilon"] for g in privacy["central"]["groups"] if g["party"] == pid)
        spent = b["central_spent"]
        assert spent["runs"] == 1 and spent["basic"] == {"epsilon": worst, "delta": 1e-7}
        assert worst - 1e-3 <= spent["epsilon"] <= worst
    assert main([*argv, "--max-central-epsilon", "0.01", "--output", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()


def test_simulate_babynames(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    argv = ["simulate", "--dataset", "babynames", "--max-users", "60000", "--epsilon", "4"]
    assert main([*argv, "-k", "8", "--reference-draws", "3", "--output", str(out)]) == 0
    doc = json.loads(out.read_text())
    ds = doc["dataset"]
    assert ds["name"] == "babynames" and ds["users"] == 60_000 and ds["parties"] == 8
    assert ds["party_names"][0] == "Christian-Arab-F" and ds["m"] > 64  # whole names
    assert "truncated" not in ds and "truncated_names" not in ds["params"]
    assert doc["evaluation"]["reference"]["draws"] == 3
    for row in doc["top_k"]:  # wide codes: a hex string, and the exact bytes beside the text
        assert row["code"].startswith("0x") and len(row["code"]) == 2 + ds["m"] // 4
        # (a noise item may end inside a character: shown escaped, its bytes exact)
        assert display(bytes.fromhex(row["bytes_hex"])) == row["item"] != ""
    assert "Jewish-M" in capsys.readouterr().err  # the dataset description
    cut = tmp_path / "cut.json"
    argv += ["--item-bytes", "8", "--truncate", "-k", "8", "--reference-draws", "0"]
    assert main([*argv, "--quiet", "--output", str(cut)]) == 0
    ds = json.loads(cut.read_text())["dataset"]
    assert ds["m"] == 64 and 0 < ds["truncated"]["distinct"] < ds["params"]["names"]
    assert ds["truncated"] == {
        "item_bytes": 8,
        "distinct": ds["params"]["truncated_names"],
        "users": ds["params"]["truncated_users"],
    }


def test_truncate_counts_what_it_cut(party_files: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "cut.json"
    argv = ["simulate", "--party-file", str(party_files[0]), "--item-bytes", "3", "--truncate"]
    assert main([*argv, "-k", "4", "--quiet", "--reference-draws", "0", "--output", str(out)]) == 0
    doc = json.loads(out.read_text())
    lines = party_files[0].read_text().split()
    assert doc["dataset"]["truncated"] == {
        "item_bytes": 3,
        "distinct": len(set(lines)),  # every word is 4 bytes: all cut, 'w123' → 'w12'
        "users": len(lines),
    }
    assert {row["item"] for row in doc["top_k"]} <= {w[:3] for w in lines}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epsilon", "0"], "epsilon"),
        (["--epsilon", "-2"], "epsilon"),
        (["-k", "0"], "k must be"),
        (["-k", "20000"], "k = 20000 is over the limit of 4096"),
        (["-k", "3000", "--max-k", "5000"], "more than the 2,000 users"),
        (["--bits", "65"], "bit"),
        (["--users", "50", "--bits", "48", "--step-rule", "fixed", "--eta", "1"], "fewer than"),
        (["--mechanism", "magic"], "invalid choice"),
        (["--party-file", "/nonexistent/file.txt", "--item-bytes", "4"], "nonexistent"),
        (["--party-file", "EMPTY", "--item-bytes", "4"], "empty"),
        (["--party-file", "GOOD", "--item-bytes", "65"], "between 1 and 64"),
        (["--party-file", "GOOD", "--item-bytes", "3"], "8,000 item(s) longer than 3 bytes, e.g."),
        (["--dataset", "babynames", "--parties", "4"], "parties does not apply"),
        (["--dataset", "babynames", "--years", "2010-2000"], "after the last"),
        (["--dataset", "babynames", "--years", "soon"], "FIRST-LAST"),
        (["--dataset", "babynames", "--item-bytes", "9"], "longer than 9 bytes"),
        (["--dataset", "babynames", "--engine", "flower"], "inprocess only"),
        (["--party-by", "sector-decade"], "babynames dataset only"),
        (["--users", "-5"], "users must be"),
        (["--epsilon", "many"], "epsilon must be float"),
    ],
)
def test_bad_input_gives_one_clear_line(
    args: list[str], message: str, tmp_path: Path, party_files: list[Path]
) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    args = [str(empty) if a == "EMPTY" else str(party_files[0]) if a == "GOOD" else a for a in args]
    proc = _fedhh("simulate", "--users", "2000", *args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("fedhh: error")]
    assert len(lines) == 1 and message in lines[0], proc.stderr


@pytest.mark.parametrize("alpha", ["0", "default"])
def test_rows_that_could_be_noise_are_marked_or_left_out(tmp_path: Path, alpha: str) -> None:
    """k far above what ε and the users can tell apart. By default TAPS answers only the rows
    above the noise bar (Bonferroni over the last levels' candidates) and says how many of the k
    it could tell from noise; with --answer-alpha 0 it answers the top-k and marks the rows
    below the bar, in the table and in the document."""
    out = tmp_path / "r.json"
    extra = ["--answer-alpha", alpha] if alpha != "default" else []
    proc = _fedhh(
        "simulate", "--users", "20000", "-k", "64", "--epsilon", "1", "--output", str(out), *extra
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    sig = doc["significance"]
    # the run's own answer bar (α = 0.25); a top-k answer is marked at α = 0.05
    assert sig["alpha"] == (0.05 if alpha == "0" else 0.25)
    assert sig["candidates"] >= 1000 and sig["z"] > 4
    flags = [row["significant"] for row in doc["top_k"]]
    assert flags == [row["estimate"] > sig["z"] * row["stderr"] for row in doc["top_k"]]
    if alpha == "0":
        assert len(flags) == 64 and sum(not f for f in flags) >= len(flags) // 2
        assert f"? {sum(not f for f in flags)} row(s) below" in proc.stdout
        assert "items asked for" not in proc.stdout
    else:
        assert 1 <= len(flags) < 32 and all(flags)
        assert f"{len(flags)} of the k = 64 items asked for are above the noise bar" in proc.stdout
        assert "row(s) below" not in proc.stdout


@pytest.mark.parametrize(
    ("raised", "status"),
    [
        (TransportError("NOT_FOUND", "run r is unknown"), 1),  # a server said no
        (RunFailed("run r failed: no party answered"), 1),
        (ParameterError("k must be ≥ 1"), 2),  # bad input
        (KeyboardInterrupt(), 130),
    ],
)
def test_exit_status_says_what_went_wrong(
    monkeypatch: pytest.MonkeyPatch, raised: BaseException, status: int
) -> None:
    import fedhh.cli.simulate as sim

    def fail(args: object) -> int:
        raise raised

    monkeypatch.setattr(sim, "cmd_simulate", fail)
    assert main(["simulate"]) == status


def test_output_dash_is_stdout_and_a_bad_output_is_refused_before_the_run(tmp_path: Path) -> None:
    """`--output -` writes the document to stdout (the table to stderr), as `python -m fedhh`;
    an --output that cannot be written is one error line before any work."""
    argv = [sys.executable, "-m", "fedhh", "simulate", "--users", "4000", "--parties", "2"]
    argv += ["-k", "4", "--epsilon", "4"]
    done = subprocess.run([*argv, "--output", "-"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["format"] == "fedhh.result/1" and "privacy" in doc
    assert "rank" in done.stderr and not (tmp_path / "-").exists()
    # stderr is not a terminal here: what takes a while is said, a line a round
    said = done.stderr.splitlines()
    assert said[0] == "loading the data ..." and "drawing the known-domain reference" in done.stderr
    rounds = [ln for ln in said if ln.startswith("round ")]
    assert len(rounds) == doc["cost"]["rounds"] and rounds[0].startswith("round 1/"), said
    for bad, why in ((tmp_path / "no" / "r.json", "is not a directory"), (tmp_path, "directory")):
        refused = subprocess.run(
            [*argv, "--output", str(bad)], capture_output=True, text=True, timeout=300
        )
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and lines == [lines[0]] and why in lines[0], refused.stderr
