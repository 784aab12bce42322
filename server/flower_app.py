"""The Flower ServerApp: drives the protocol's :class:`Coordinator` over Flower's Message API.

1. **Discovery** (``query.discover``): waits for ``parties`` SuperNodes, asks each for its party
   id, user count and codec, and maps Flower node ids to parties. Parties are ordered by their
   partition id (then id), so the run spec equals ``fedhh simulate``'s for the same data.
2. **Rounds**: the coordinator's requests of a round go out as ``query.estimate`` /
   ``query.search`` messages, each to its party's node only (the TAPS sequential pass addresses
   one node per round). Replies are stepped into the coordinator in request order.
3. **Failures**: an error reply (the party's ``ErrorResult`` or a Flower error, e.g. a crashed
   ClientApp or an unreachable node), an undecodable reply or no reply within ``round-timeout``
   seconds goes to :meth:`Coordinator.fail_party`; the ``policy`` run-config key (``continue`` /
   ``fail``) decides, exactly as for the other transports.
4. **Result**: the result document (:func:`fedhh.report.result_document`, with the evaluation
   when the nodes serve one named synthetic/AOL federation the server can rebuild) is written to
   the ``output`` path (on the machine that runs the ServerApp) and the table is logged.

Run-config keys (``[tool.flwr.app.config]`` in pyproject.toml, override with ``--run-config``):
``mechanism``, ``epsilon``, ``k``, ``oracle``, ``eta``, ``step-rule``, ``prune-z`` (< 0: the
mechanism's default), ``completion``, ``pool-size``, ``seed``, ``run-id``, ``policy``,
``parties`` (SuperNodes to wait for), ``node-wait`` and ``round-timeout`` (seconds), ``output``
("" for none) and the dataset keys of :mod:`fedhh.clients.flower_data` (used by the ClientApps
when their node config does not set them).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedhh.clients.flower_data import load_federation
from flwr.app import Context, Message
from flwr.serverapp import Grid, ServerApp

from fedhh.engine import check_feasible
from fedhh.errors import FedHHError, ParameterError, ProtocolError
from fedhh.flower_records import (
    DISCOVER,
    PartyInfo,
    discover_content,
    message_type_of,
    party_info_from_content,
    reply_from_content,
    request_to_content,
)
from fedhh.mechanisms.params import MechanismParams
from fedhh.metrics import Scores
from fedhh.protocol import Coordinator, Request, RunResult, RunSpec, codec_from_name
from fedhh.report import format_table, result_document

log = logging.getLogger("fedhh.flower")

ResultCallback = Callable[[RunResult], None]


@dataclass(frozen=True)
class FlowerRunSettings:
    """The ServerApp's run configuration."""

    mechanism: str = "taps"
    epsilon: float = 4.0
    k: int = 16
    oracle: str = "auto"
    eta: int = 4
    step_rule: str = "adaptive"
    prune_z: float | None = None
    completion: float = 0.0
    pool_size: int = 4096
    seed: int = 0
    run_id: str = "run-1"
    policy: str = "continue"
    parties: int = 1
    node_wait: float = 120.0
    round_timeout: float = 600.0
    output: str = ""

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> FlowerRunSettings:
        def get(key: str, kind: type, default: Any) -> Any:
            value = cfg.get(key, default)
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ParameterError(f"run config {key!r} must be {kind.__name__}, got {value!r}")
            return value

        d = cls()
        prune = get("prune-z", float, -1.0)
        settings = cls(
            mechanism=get("mechanism", str, d.mechanism),
            epsilon=get("epsilon", float, d.epsilon),
            k=get("k", int, d.k),
            oracle=get("oracle", str, d.oracle),
            eta=get("eta", int, d.eta),
            step_rule=get("step-rule", str, d.step_rule),
            prune_z=None if prune < 0 else prune,
            completion=get("completion", float, d.completion),
            pool_size=get("pool-size", int, d.pool_size),
            seed=get("seed", int, d.seed),
            run_id=get("run-id", str, d.run_id),
            policy=get("policy", str, d.policy),
            parties=get("parties", int, d.parties),
            node_wait=get("node-wait", float, d.node_wait),
            round_timeout=get("round-timeout", float, d.round_timeout),
            output=get("output", str, d.output),
        )
        if settings.mechanism == "pem":
            raise ParameterError(
                "mechanism 'pem' pools every user into one population, which a federation of "
                "SuperNodes cannot do; use pem-local, pem-global, tap or taps"
            )
        if settings.policy not in ("continue", "fail"):
            raise ParameterError(f"policy must be continue or fail, got {settings.policy!r}")
        if settings.parties < 1:
            raise ParameterError(f"parties must be ≥ 1, got {settings.parties}")
        for name in ("node_wait", "round_timeout"):
            v = getattr(settings, name)
            if not (math.isfinite(v) and v > 0):
                raise ParameterError(f"{name.replace('_', '-')} must be > 0 seconds, got {v}")
        return settings

    def params(self, m: int) -> MechanismParams:
        return MechanismParams(
            mechanism=self.mechanism,
            epsilon=self.epsilon,
            k=self.k,
            m=m,
            oracle=self.oracle,
            eta=self.eta,
            step_rule=self.step_rule,
            prune_z=self.prune_z,
            completion=self.completion,
            pool_size=self.pool_size,
            seed=self.seed,
        )


# --- message exchange ----------------------------------------------------------------------


def exchange(grid: Grid, messages: list[Message], timeout: float) -> list[Message | None]:
    """Push ``messages`` and pull their replies until all arrive or ``timeout`` passes.

    Returns one entry per message, in order: its reply, or None if none came in time. Polls with
    a short, growing interval (``Grid.send_and_receive`` sleeps 3 s between pulls on the
    deployment engine).
    """
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


def wait_for_nodes(grid: Grid, n: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= n:
            return nodes
        if time.monotonic() >= deadline:
            raise ProtocolError(
                f"only {len(nodes)} of {n} SuperNodes connected within {timeout:g} s"
            )
        time.sleep(0.2)


def _error_text(msg: Message) -> str:
    return f"Flower error {msg.error.code}: {msg.error.reason}"


# --- the run -------------------------------------------------------------------------------


class FlowerCoordinator:
    """One protocol run over a Flower Grid."""

    def __init__(self, grid: Grid, settings: FlowerRunSettings) -> None:
        self.grid = grid
        self.settings = settings
        self.node_of: dict[str, int] = {}
        self.infos: list[PartyInfo] = []

    def discover(self) -> RunSpec:
        s = self.settings
        nodes = wait_for_nodes(self.grid, s.parties, s.node_wait)
        msgs = [
            Message(
                discover_content(),
                dst_node_id=node,
                message_type=DISCOVER,
                ttl=s.round_timeout,
                group_id="discover",
            )
            for node in nodes
        ]
        replies = exchange(self.grid, msgs, s.round_timeout)
        found: list[tuple[PartyInfo, int]] = []
        problems = []
        for node, msg in zip(nodes, replies, strict=True):
            if msg is None:
                problems.append(f"node {node}: no reply to discovery")
            elif msg.has_error():
                problems.append(f"node {node}: {_error_text(msg)}")
            else:
                try:
                    found.append((party_info_from_content(msg.content), node))
                except ProtocolError as exc:
                    problems.append(f"node {node}: {exc}")
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
        sizes = tuple(info.users for info in self.infos)
        params = s.params(codec_from_name(codecs[0]).m)
        check_feasible(params, ids, sizes)
        return RunSpec(s.run_id, params, tuple(ids), sizes, codecs[0])

    def run(self, spec: RunSpec) -> RunResult:
        s = self.settings
        t0 = time.perf_counter()
        coord = Coordinator(spec, s.policy)
        queue = coord.start()
        while queue:
            queue = self._round(spec, coord, queue)
        if coord.error is not None or coord.result is None:
            raise ProtocolError(f"run {spec.run_id} failed: {coord.error}")
        result = coord.result
        result.cost["wall_seconds"] = time.perf_counter() - t0
        return result

    def _round(self, spec: RunSpec, coord: Coordinator, queue: list[Request]) -> list[Request]:
        s = self.settings
        group = f"round-{coord.round}"
        msgs = [
            Message(
                request_to_content(spec, req),
                dst_node_id=self.node_of[req.party_id],
                message_type=message_type_of(req),
                ttl=s.round_timeout,
                group_id=group,
            )
            for req in queue
        ]
        replies = exchange(self.grid, msgs, s.round_timeout)
        nxt: list[Request] = []
        for req, reply_msg in zip(queue, replies, strict=True):  # request order, as in-process
            if coord.done:
                break
            if reply_msg is None:
                reason = f"no reply within {s.round_timeout:g} s (node gone?)"
                nxt.extend(coord.fail_party(req.party_id, reason))
                continue
            if reply_msg.has_error():
                nxt.extend(coord.fail_party(req.party_id, _error_text(reply_msg)))
                continue
            try:
                nxt.extend(coord.step(reply_from_content(reply_msg.content)))
            except ProtocolError as exc:
                nxt.extend(coord.fail_party(req.party_id, f"bad reply: {exc}"))
        return nxt

    def evaluation(self, k: int, result: RunResult) -> Scores | None:
        """Scores against the ground truth when every node serves one named federation."""
        sources = {info.data for info in self.infos}
        if len(sources) != 1 or not next(iter(sources)):
            return None
        try:
            ds = load_federation(json.loads(next(iter(sources))))
        except (FedHHError, OSError, ValueError) as exc:
            log.warning("no evaluation: the federation cannot be rebuilt here (%s)", exc)
            return None
        if list(ds.party_sizes) != [info.users for info in self.infos]:
            return None
        return ds.evaluate(result.items, result.estimates, k)


def run_flower(grid: Grid, cfg: Mapping[str, Any]) -> tuple[RunResult, dict[str, Any]]:
    """Discovery, the run and its result document (written to ``output`` when set)."""
    settings = FlowerRunSettings.from_config(cfg)
    driver = FlowerCoordinator(grid, settings)
    spec = driver.discover()
    log.info(
        "fedhh: run %s, %s over %d parties: %s",
        spec.run_id,
        spec.params.mechanism,
        len(spec.party_ids),
        ", ".join(
            f"{p} ({n} users)" for p, n in zip(spec.party_ids, spec.party_sizes, strict=True)
        ),
    )
    result = driver.run(spec)
    codec = codec_from_name(spec.codec)
    doc = result_document(result, codec, driver.evaluation(settings.k, result))
    if settings.output:
        out = Path(settings.output).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(out)
    log.info("fedhh result\n%s", format_table(doc))
    return result, doc


def make_server_app(
    overrides: Mapping[str, Any] | None = None, on_result: ResultCallback | None = None
) -> ServerApp:
    """A ServerApp; ``overrides`` are run-config entries (``run_simulation`` passes none),
    ``on_result`` receives the run's result (in-process simulation)."""
    extra = dict(overrides or {})
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        result, _ = run_flower(grid, {**context.run_config, **extra})
        if on_result is not None:
            on_result(result)

    return app


app = make_server_app()


__all__ = [
    "FlowerCoordinator",
    "FlowerRunSettings",
    "app",
    "exchange",
    "make_server_app",
    "run_flower",
    "wait_for_nodes",
]
