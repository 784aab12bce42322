"""The Flower ServerApp: the protocol's :class:`~fedhh.protocol.RunDriver` over Flower's Message
API (docs/flower.md). It only moves the driver's bytes and maps Flower's failures.

1. **Discovery** (``query.discover``): waits for ``parties`` SuperNodes (``""``: the SuperNodes
   that are connected, once no new one has joined for :data:`NODE_SETTLE` seconds), asks each
   for its party (id, user count, codec) and maps node ids to parties, ordered by partition id
   (then id), so the run spec equals ``fedhh simulate``'s for the same data.
2. **Rounds**: each request goes, as its protobuf bytes, to its party's node only.
3. **Failures**: a Flower error (a crashed ClientApp, an unreachable node), a reply that does not
   decode or fit, or no reply within ``round-timeout`` seconds fails the request in the driver;
   the ``policy`` decides, as on every transport.
4. **Result**: the result document (with the evaluation when the nodes serve one named
   federation the server can rebuild) is written to ``output`` and logged with the top-k table
   (through Flower's logger, so ``flwr log`` shows it). A run without a result raises, so
   Flower records the run as ``finished:failed``.

Run-config keys: every field of :class:`~fedhh.mechanisms.params.MechanismParams`, of
:class:`~fedhh.run.settings.DatasetParams` and of :class:`FlowerRun`, spelled with dashes
(:mod:`fedhh.run.settings`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.serverapp import Grid, ServerApp

from fedhh.core.declare import param
from fedhh.core.metrics import Scores
from fedhh.errors import FedHHError, ParameterError, ProtocolError
from fedhh.flower import records
from fedhh.mechanisms.params import MechanismParams
from fedhh.protocol import RunDriver, RunResult, RunSpec, Sent, codec_from_name
from fedhh.protocol.admission import BudgetView, admit_run
from fedhh.protocol.coordinator import POLICIES
from fedhh.protocol.encoding import budget_view, encode
from fedhh.protocol.limits import Limits
from fedhh.run import settings
from fedhh.run.result import format_table, result_document
from fedhh.wire.v1 import protocol_pb2

# A child of Flower's logger: its lines reach Flower's console handler, which an app process
# mirrors into the run's log (``flwr log``, ``flwr run --stream``).
log = logging.getLogger("flwr.fedhh")
NODE_SETTLE = 2.0  # parties "": seconds without a new SuperNode before the run starts

ResultCallback = Callable[[RunResult], None]


@dataclass(frozen=True)
class FlowerRun:
    """The ServerApp's own run-config keys."""

    run_id: str = param("run-1", "the run's id (in the result document and the log)")
    policy: str = param(
        "continue", "when a party fails: continue without it, or fail the whole run"
    )
    node_wait: float = param(120.0, "seconds to wait for the SuperNodes to connect (> 0)")
    round_timeout: float = param(
        600.0, "seconds a round may take before a party that has not replied has failed (> 0)"
    )
    output: str = param(
        "", "path of the result document (JSON) on the ServerApp's machine (default: none)"
    )

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ParameterError(f"policy must be continue or fail, got {self.policy!r}")
        for name in ("node_wait", "round_timeout"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ParameterError(f"{settings.key(name)} must be > 0 seconds, got {v}")


@dataclass(frozen=True)
class FlowerSettings:
    run: FlowerRun
    params: MechanismParams  # m as the parties' codec says, after discovery
    data: settings.DatasetParams
    limits: Limits  # the run's bounds on this side (max-k, max-candidates, max-memory-mb)

    @property
    def parties(self) -> int | None:
        """How many SuperNodes the run needs (None: the ones connected)."""
        return self.data.parties

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> FlowerSettings:
        s = cls(
            settings.from_config(FlowerRun, cfg),
            settings.from_config(MechanismParams, cfg, m=64),  # m: the parties' codec's
            settings.from_config(settings.DatasetParams, cfg),
            settings.from_config(Limits, cfg),
        )
        if s.params.mech.pools_users:
            raise ParameterError(
                "mechanism 'pem' pools every user into one population, which a federation of "
                "SuperNodes cannot do; use pem-local, pem-global, tap or taps"
            )
        return s


def exchange(grid: Grid, messages: list[Message], timeout: float) -> list[Message | None]:
    """Push ``messages`` and pull their replies until all arrive or ``timeout`` passes: one
    entry per message, its reply or None. Polls with a short, growing interval
    (``Grid.send_and_receive`` sleeps 3 s between pulls on the deployment engine)."""
    ids: list[str | None] = []
    for msg in messages:  # one by one: a message the SuperLink refuses counts as unanswered
        pushed = [mid for mid in grid.push_messages([msg]) if mid]
        ids.append(pushed[0] if pushed else None)
    waiting = {mid for mid in ids if mid is not None}
    replies: dict[str, Message] = {}
    deadline = time.monotonic() + timeout
    pause = 0.01
    while waiting:
        for msg in grid.pull_messages(list(waiting)):
            rid = msg.metadata.reply_to_message_id
            if rid in waiting:
                waiting.discard(rid)
                replies[rid] = msg
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 1.5, 0.25)
    return [replies.get(mid) if mid is not None else None for mid in ids]


def wait_for_nodes(
    grid: Grid, n: int | None, timeout: float, settle: float = NODE_SETTLE
) -> list[int]:
    """The SuperNodes of the run: ``n`` of them, or (``n`` None) the ones connected once the set
    has not changed for ``settle`` seconds. Raises if they are not there within ``timeout``."""
    start = time.monotonic()
    deadline = start + timeout
    seen: list[int] = []
    changed = start
    while True:
        nodes = sorted(grid.get_node_ids())
        now = time.monotonic()
        if nodes != seen:
            seen, changed = nodes, now
        if n is not None and len(nodes) >= n:
            return nodes
        if n is None and nodes and (now - changed >= settle or now >= deadline):
            return nodes
        if now >= deadline:
            if n is None:
                raise ProtocolError(f"no SuperNode connected within {timeout:g} s")
            raise ProtocolError(
                f"only {len(nodes)} of {n} SuperNodes connected within {timeout:g} s (set "
                'parties to the number of SuperNodes, or parties="" to use those connected; '
                "Flower's local simulation runs `num-supernodes` of them: 2 unless set with "
                "--federation-config num-supernodes=N)"
            )
        time.sleep(0.2)


def _problem(msg: Message | None, timeout: float) -> str:
    if msg is None:
        return f"no reply within {timeout:g} s (node gone?)"
    return f"Flower error {msg.error.code}: {msg.error.reason}" if msg.has_error() else ""


class FlowerCoordinator:
    """One protocol run over a Flower Grid."""

    def __init__(self, grid: Grid, s: FlowerSettings) -> None:
        self.grid = grid
        self.s = s
        self.node_of: dict[str, int] = {}
        self.infos: list[Any] = []
        self.budgets: dict[str, BudgetView | None] = {}

    def _send(self, contents: list[Any], nodes: list[int], types: list[str], group: str) -> Any:
        timeout = self.s.run.round_timeout
        msgs = [
            Message(c, dst_node_id=n, message_type=t, ttl=timeout, group_id=group)
            for c, n, t in zip(contents, nodes, types, strict=True)
        ]
        return exchange(self.grid, msgs, timeout)

    def discover(self) -> RunSpec:
        nodes = wait_for_nodes(self.grid, self.s.parties, self.s.run.node_wait)
        replies = self._send(
            [records.content() for _ in nodes], nodes, [records.DISCOVER] * len(nodes), "discover"
        )
        found, problems = [], []
        for node, msg in zip(nodes, replies, strict=True):
            problem = _problem(msg, self.s.run.round_timeout)
            try:
                if not problem:
                    info = protocol_pb2.PartyInfo.FromString(
                        records.entry(msg.content, "party-info")
                    )
                    found.append((info, node))
            except (ProtocolError, ValueError) as exc:
                problem = str(exc)
            if problem:
                problems.append(f"node {node}: {problem}")
        if problems:  # before the run starts, every node must answer
            raise ProtocolError("discovery failed: " + "; ".join(problems))
        found.sort(key=lambda pn: (pn[0].order, pn[0].party_id))
        ids = [info.party_id for info, _ in found]
        dupes = sorted({p for p in ids if ids.count(p) > 1})
        if dupes:
            raise ProtocolError(f"several SuperNodes serve party {', '.join(dupes)}")
        codecs = sorted({info.codec for info, _ in found})
        if len(codecs) != 1:
            raise ProtocolError(f"the parties' items use different codecs: {', '.join(codecs)}")
        self.infos = [info for info, _ in found]
        self.node_of = {info.party_id: node for info, node in found}
        sizes = tuple(int(info.users) for info in self.infos)
        params = settings.from_config(
            MechanismParams, settings.to_config(self.s.params), m=codec_from_name(codecs[0]).m
        )
        self.budgets = {info.party_id: budget_view(info) for info in self.infos}
        chosen = admit_run(params, ids, sizes, self.s.limits, budgets=self.budgets).epsilon
        params = dataclasses.replace(params, epsilon=chosen)  # a central target's ε₀
        return RunSpec(self.s.run.run_id, params, tuple(ids), sizes, codecs[0])

    def run(self, spec: RunSpec) -> RunResult:
        spec_bytes = encode(spec)
        driver = RunDriver(spec, self.s.run.policy, bounds=self.s.limits, budgets=self.budgets)
        queue = driver.start(time.perf_counter())
        while queue:
            replies = self._send(
                [records.content(spec=spec_bytes, request=s.payload) for s in queue],
                [self.node_of[s.party_id] for s in queue],
                [records.message_type(s.request) for s in queue],
                f"round-{driver.coord.round}",
            )
            nxt: list[Sent] = []
            for sent, msg in zip(queue, replies, strict=True):  # a failed run stops early
                problem = _problem(msg, self.s.run.round_timeout)
                if not problem and not driver.done:
                    try:
                        nxt.extend(driver.receive(records.entry(msg.content, "reply")))
                        continue
                    except ProtocolError as exc:
                        problem = f"bad reply: {exc}"
                if not driver.done:
                    nxt.extend(driver.fail(sent.request_id, problem))
            queue = nxt
        return driver.outcome(time.perf_counter())

    def evaluation(self, k: int, result: RunResult) -> Scores | None:
        """Scores against the ground truth when every node serves one named federation."""
        sources = {info.data for info in self.infos}
        if len(sources) != 1 or not next(iter(sources)):
            return None
        try:
            data = settings.from_config(settings.DatasetParams, json.loads(next(iter(sources))))
            ds = settings.load_dataset(data)
        except (FedHHError, OSError, ValueError) as exc:
            log.warning("no evaluation: the federation cannot be rebuilt here (%s)", exc)
            return None
        if list(ds.party_sizes) != [info.users for info in self.infos]:
            return None
        return ds.evaluate(result.items, result.estimates, k)


def run_flower(grid: Grid, cfg: Mapping[str, Any]) -> tuple[RunResult, dict[str, Any]]:
    """Discovery, the run and its result document (written to ``output`` when set)."""
    s = FlowerSettings.from_config(cfg)
    coordinator = FlowerCoordinator(grid, s)
    spec = coordinator.discover()
    log.info(
        "fedhh: run %s, %s over %s",
        spec.run_id,
        spec.params.mechanism,
        ", ".join(f"{p} ({n})" for p, n in zip(spec.party_ids, spec.party_sizes, strict=True)),
    )
    result = coordinator.run(spec)
    codec = codec_from_name(spec.codec)
    doc = result_document(result, codec, coordinator.evaluation(spec.params.k, result))
    if s.run.output:
        out = Path(s.run.output).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(out)
    where = f" (written to {s.run.output})" if s.run.output else ""
    log.info("fedhh result%s\n%s", where, format_table(doc))
    return result, doc


def make_server_app(
    overrides: Mapping[str, Any] | None = None, on_result: ResultCallback | None = None
) -> ServerApp:
    """A ServerApp; ``overrides`` are run-config entries that win over the run's, ``on_result``
    receives the run's result (both for driving the app in-process, as the tests do)."""
    extra = dict(overrides or {})
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            result, _ = run_flower(grid, {**context.run_config, **extra})
        except FedHHError as exc:  # raised on: Flower marks the run finished:failed
            log.error("fedhh: the run failed: %s", exc)
            raise
        if on_result is not None:
            on_result(result)

    return app


app = make_server_app()
