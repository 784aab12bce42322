"""The four transports of the contract suite (tests/test_transports.py), each driven as its users
drive it, and the federations it runs them on.

* ``inprocess``: ``fedhh simulate --party-file ... --output`` (the command line, in this process);
* ``grpc``: ``fedhh deploy local --party-file ...`` (a coordinator and one party agent per party,
  real processes with TLS and tokens), runs started and read with the analyst's
  :class:`~fedhh.server.analyst.AnalystClient`;
* ``flower-sim``: :func:`fedhh.flower.simulation.simulate_flower` (Flower's Simulation Engine,
  Ray), all runs on one private simulation SuperLink;
* ``flower-deploy``: ``flower-superlink`` and three ``flower-supernode`` processes
  (tests/flower_deploy.py), the party files named in the run config.

Each answers :meth:`Transport.run` with an :class:`Outcome`: the answer and costs of the result
document, or the message of the refusal. Every process is stopped by PID at the end.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import shlex
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from grpc_harness import FEDHH

from fedhh.core.items import IntCodec, StringCodec
from fedhh.datasets import FederatedDataset, synthetic_urls, synthetic_zipf
from fedhh.errors import FedHHError, TransportError
from fedhh.mechanisms.params import MechanismParams
from fedhh.run import settings

ROOT = Path(__file__).resolve().parents[1]
PARTIES = 3


# --- federations --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Federation:
    """Party files of one federation and the item flag that reads them, or (``named``) the
    dataset keys of a federation every transport builds itself (``fedhh simulate``'s flags,
    ``fedhh deploy local`` writing the party files, each SuperNode its partition)."""

    name: str
    files: tuple[Path, ...]
    item_flag: tuple[str, str]  # ("--item-bits", "32") or ("--item-bytes", "32")
    m: int
    named: tuple[tuple[str, Any], ...] = ()  # run-config keys of DatasetParams

    @property
    def parties(self) -> int:
        return int(dict(self.named)["parties"]) if self.named else len(self.files)

    @property
    def data_argv(self) -> list[str]:
        """The data flags of ``fedhh simulate`` and ``fedhh deploy local``."""
        if self.named:
            return [a for k, v in self.named for a in (f"--{k}", str(v))]
        return [*(a for f in self.files for a in ("--party-file", str(f))), *self.item_flag]

    @property
    def data_config(self) -> dict[str, Any]:
        """The Flower run-config keys of the data (the files: one per partition)."""
        if self.named:
            return dict(self.named)
        key = self.item_flag[0].removeprefix("--")
        return {"party-files": ",".join(str(f) for f in self.files), key: int(self.item_flag[1])}


def _words(rng: np.random.Generator, n: int, longest: int) -> list[bytes]:
    """``n`` distinct lowercase words of 2..``longest`` bytes, with some non-ASCII letters."""
    letters = [*"abcdefghijklmnopqrstuvwxyz", "é", "ж"]  # 1 and 2 bytes in UTF-8
    out: dict[bytes, None] = {}
    while len(out) < n:
        word = "".join(rng.choice(letters, size=int(rng.integers(1, longest))))
        raw = word.encode()
        if 2 <= len(raw) <= longest:
            out[raw] = None
    return list(out)


def write_federations(root: Path) -> dict[str, Federation]:
    """Three federations of three parties each, as party files (one item per line):

    * ``int32``: Zipf integers of 32 bits; party sizes 1,200 / 900 / 20 (the small one makes a
      plan of many levels infeasible);
    * ``text48``: words of at most 6 bytes (m = 48), Zipf over 400 words, each party its own
      rank order of them (non-IID);
    * ``url256``: the URL federation (items of 20..32 bytes, m = 256);
    * ``urls``: a URL federation by its dataset keys (``--dataset urls``), no files."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(21)
    out: dict[str, Federation] = {}

    ints = synthetic_zipf(2_120, PARTIES, m=32, n_items=300, s=1.3, seed=2, split="iid")
    sizes = [1_200, 900, 20]
    codes = np.concatenate(list(ints.parties))
    parts = np.split(rng.permutation(codes), np.cumsum(sizes)[:-1])
    files = []
    for i, part in enumerate(parts):
        path = root / f"int32-{i}.txt"
        path.write_text("".join(f"{int(c)}\n" for c in part))
        files.append(path)
    out["int32"] = Federation("int32", tuple(files), ("--item-bits", "32"), 32)

    words = _words(rng, 400, 6)
    weights = 1.0 / np.arange(1, len(words) + 1) ** 1.2
    files = []
    for i in range(PARTIES):
        order = rng.permutation(len(words))
        p = weights[order] / weights.sum()
        picks = rng.choice(len(words), size=6_000, p=p)
        path = root / f"text48-{i}.txt"
        path.write_bytes(b"".join(words[j] + b"\n" for j in picks))
        files.append(path)
    out["text48"] = Federation("text48", tuple(files), ("--item-bytes", "6"), 48)

    urls = synthetic_urls(24_000, PARTIES, n_items=300, s=1.3, seed=4)
    out["url256"] = Federation(
        "url256", _write_strings(root, "url256", urls), ("--item-bytes", "32"), 256
    )
    named = (("dataset", "urls"), ("users", 24_000), ("parties", PARTIES), ("items", 300))
    named += (("zipf-s", 1.3), ("data-seed", 7))
    out["urls"] = Federation("urls", (), ("--item-bytes", "32"), 256, named)
    return out


def _write_strings(root: Path, name: str, ds: FederatedDataset) -> tuple[Path, ...]:
    assert isinstance(ds.codec, StringCodec)
    files = []
    for i, part in enumerate(ds.parties):
        path = root / f"{name}-{i}.txt"
        path.write_bytes(b"".join(it + b"\n" for it in ds.codec.to_bytes(part)))
        files.append(path)
    return tuple(files)


# --- outcomes -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """What a transport gave for one run: the result document's answer and costs, or a refusal."""

    codes: tuple[Any, ...] = ()
    estimates: tuple[float, ...] = ()
    stderrs: tuple[float, ...] = ()
    cost: tuple[int, int, int] = (0, 0, 0)  # rounds, bytes to parties, bytes to the coordinator
    refusal: str = ""
    privacy: str = ""  # the privacy block (local ε₀, central (ε_c, δ) per group), as JSON

    @classmethod
    def of(cls, doc: dict[str, Any]) -> Outcome:
        rows, c = doc["top_k"], doc["cost"]
        assert doc["privacy"]["central"]["groups"], "every run states its central guarantee"
        return cls(
            tuple(r["code"] for r in rows),
            tuple(float(r["estimate"]) for r in rows),
            tuple(float(r["stderr"]) for r in rows),
            (int(c["rounds"]), int(c["bytes_to_parties"]), int(c["bytes_to_coordinator"])),
            # the run's guarantee; not ``budgets``, each transport's ledgers as it reports them
            privacy=json.dumps(
                {k: v for k, v in doc["privacy"].items() if k != "budgets"}, sort_keys=True
            ),
        )


class Transport:
    name = ""

    def run(self, fed: Federation, params: MechanismParams, run_id: str) -> Outcome:
        """The run's outcome (``run_id`` is in every message, so the byte costs count it)."""
        raise NotImplementedError

    def close(self) -> None:
        return None


def simulate_argv(fed: Federation, params: MechanismParams) -> list[str]:
    """``fedhh simulate`` with the party files and the parameters that differ from the defaults."""
    argv = ["simulate", *fed.data_argv]
    default = MechanismParams()
    for key, value in settings.to_config(params).items():
        name = key.replace("-", "_")
        if name == "m" or getattr(default, name) == getattr(params, name):
            continue
        if isinstance(value, bool):
            argv.append(f"--{key}" if value else f"--no-{key}")
        else:
            argv += ["-k" if key == "k" else f"--{key}", str(value)]
    return argv


class InProcess(Transport):
    name = "inprocess"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.n = 0

    def run(self, fed: Federation, params: MechanismParams, run_id: str) -> Outcome:
        return self.command(fed, params, run_id)

    def command(
        self, fed: Federation, params: MechanismParams, run_id: str, *extra: str
    ) -> Outcome:
        """``fedhh simulate`` (and ``extra`` flags) with ``--output``, in this process."""
        from fedhh.cli import main

        self.n += 1
        out = self.root / f"simulate-{self.n}.json"
        argv = [*simulate_argv(fed, params), "--run-id", run_id, "--quiet", *extra]
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            status = main([*argv, "--reference-draws", "0", "--output", str(out)])
        if status != 0:
            return Outcome(refusal=err.getvalue().strip().removeprefix("fedhh: error: "))
        return Outcome.of(json.loads(out.read_text()))


# --- gRPC: fedhh deploy local -------------------------------------------------------------------
def read_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> list[str]:
    """Lines of ``proc``'s stdout up to the one containing ``marker`` (a thread reads them)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if line is None:
            break
        seen.append(line)
        if marker in line:
            return seen
    raise AssertionError(f"no {marker!r} from the command:\n" + "\n".join(seen))


def kill_by_pid(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@dataclass
class LocalDeploy:
    """One ``fedhh deploy local`` process tree and an analyst client of its coordinator."""

    proc: subprocess.Popen[str]
    lines: list[str]
    pids: list[int] = field(default_factory=list)
    client: Any = None

    @classmethod
    def start(
        cls, d: Path, argv: Sequence[str], cwd: Path | None = None, connect: bool = True
    ) -> LocalDeploy:
        """``fedhh deploy local --dir d argv...`` until it says it is ready (``connect``: with
        an analyst client of the coordinator it printed)."""
        proc = subprocess.Popen(
            [*FEDHH, "deploy", "local", "--dir", str(d), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        dep = cls(proc, [], [proc.pid])
        try:
            dep.lines = read_until(proc, "ready", timeout=180)
            dep.pids += [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
            if not connect:
                return dep
            from fedhh.server.analyst import AnalystClient

            query = next(shlex.split(ln) for ln in dep.lines if "fedhh query" in ln)
            opt = dict(zip(query[2::2], query[3::2], strict=False))
            dep.client = AnalystClient(
                opt["--coordinator"],
                token=Path(opt["--token-file"]).read_text().strip(),
                ca_cert=Path(opt["--ca-cert"]),
                timeout=60.0,
            )
        except BaseException:
            dep.stop()
            raise
        return dep

    def stop(self) -> list[int]:
        """SIGKILL to every process of the tree (by PID) and a check that they are all gone."""
        if self.client is not None:
            self.client.close()
        if self.proc.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                self.pids += [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]
        kill_by_pid([p for p in self.pids if not gone(p)])
        self.proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while not all(gone(p) for p in self.pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        return [p for p in self.pids if not gone(p)]


class Grpc(Transport):
    name = "grpc"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.deploys: dict[str, LocalDeploy] = {}

    def deploy(self, fed: Federation) -> LocalDeploy:
        if fed.name not in self.deploys:
            d = self.root / f"deploy-{fed.name}"
            self.deploys[fed.name] = LocalDeploy.start(d, fed.data_argv)
        return self.deploys[fed.name]

    def run(self, fed: Federation, params: MechanismParams, run_id: str) -> Outcome:
        client = self.deploy(fed).client
        parties = [f"party-{i}" for i in range(fed.parties)]
        try:
            client.start(params, parties, run_id=run_id, deadline_seconds=120)
        except TransportError as exc:
            return Outcome(refusal=exc.message)
        info = client.wait(run_id, timeout=300)
        if info["state"] != "done":
            return Outcome(refusal=str(info.get("error", info)))
        return Outcome.of(client.document(run_id))

    def close(self) -> None:
        left = [pid for dep in self.deploys.values() for pid in dep.stop()]
        assert left == [], f"processes of fedhh deploy local still running: {left}"


# --- Flower ---------------------------------------------------------------------------------
def flower_config(fed: Federation, params: MechanismParams, **extra: Any) -> dict[str, Any]:
    cfg = {k: v for k, v in settings.to_config(params).items() if k != "m"}
    return {**cfg, **fed.data_config, "parties": fed.parties, **extra}


def refusal_text(exc: Exception) -> str:
    """The run's failure as the ServerApp logged it (``fedhh: the run failed: ...``)."""
    text = str(exc)
    marker = "fedhh: the run failed: "
    if marker in text:
        return text[text.index(marker) + len(marker) :].splitlines()[0]
    return text


class FlowerSim(Transport):
    name = "flower-sim"

    def __init__(self, root: Path) -> None:
        from fedhh.flower.run import SimulationLink

        self.cli = InProcess(root)
        self.link = SimulationLink(root / "flower-sim")
        self.flwr = self.link.start()

    def run(self, fed: Federation, params: MechanismParams, run_id: str) -> Outcome:
        from fedhh.flower.simulation import simulate_flower

        if fed.named:  # as a user runs it: fedhh simulate --engine flower --dataset ...
            return self.cli.command(fed, params, run_id, "--engine", "flower")
        cfg = flower_config(fed, params, **{"run-id": run_id})
        try:
            res = simulate_flower(cfg, fed.parties, total_cpus=2, link=self.flwr, timeout=300)
        except FedHHError as exc:
            return Outcome(refusal=refusal_text(exc))
        from fedhh.run.result import result_document

        codec = StringCodec(fed.m // 8) if fed.item_flag[0] == "--item-bytes" else IntCodec(fed.m)
        return Outcome.of(result_document(res, codec))

    def close(self) -> None:
        self.link.stop()


class FlowerDeploy(Transport):
    name = "flower-deploy"

    def __init__(self, root: Path) -> None:
        from flower_deploy import start_local

        self.root = root
        nodes = [{"partition-id": i, "num-partitions": PARTIES} for i in range(PARTIES)]
        self.dep = start_local(root / "flower-deploy", nodes)
        self.n = 0

    def run(self, fed: Federation, params: MechanismParams, run_id: str) -> Outcome:
        self.n += 1
        out = self.root / f"flower-deploy-{self.n}.json"
        cfg = flower_config(fed, params, **{"run-id": run_id})
        try:
            doc = self.dep.run_app(ROOT / "flower-app", cfg, out, timeout=300)
        except FedHHError as exc:
            return Outcome(refusal=refusal_text(exc))
        return Outcome.of(doc)

    def close(self) -> None:
        self.dep.stop()
        assert self.dep.leftovers() == [], "Flower processes still running"


TRANSPORTS: dict[str, type[Transport]] = {
    t.name: t for t in (InProcess, Grpc, FlowerSim, FlowerDeploy)
}


@contextlib.contextmanager
def opened(kind: str, root: Path) -> Iterator[Transport]:
    transport = TRANSPORTS[kind](root)
    try:
        yield transport
    finally:
        transport.close()
