"""The analyst's side of the coordinator's analyst API: run spec files and the Python client (the
same operations as ``fedhh query``)::

    with AnalystClient("coord.example.org:7700", token=token, ca_cert=Path("ca.pem")) as c:
        run = c.start(MechanismParams(mechanism="taps", k=16, m=32), ["party-0", "party-1"])
        c.wait(run["run_id"])
        for row in c.top(run["run_id"], k=10):
            print(row["rank"], row["item"], row["estimate"], row["stderr"])

Every method returns plain dicts/lists (JSON-ready); gRPC errors become
:class:`~fedhh.errors.TransportError` with the status code name and the server's message.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from fedhh.errors import ParameterError, TransportError
from fedhh.mechanisms.params import MechanismParams
from fedhh.protocol.encoding import params_to_pb
from fedhh.run.settings import params_from_table
from fedhh.server.store import FINAL_STATES
from fedhh.wire.security import ServiceClient
from fedhh.wire.v1 import analyst_pb2, analyst_pb2_grpc


def _info(msg: Any) -> dict[str, Any]:
    """A RunInfo (or PartyStatus) as a plain dict (repeated fields as lists)."""
    out: dict[str, Any] = {}
    for f in msg.DESCRIPTOR.fields:
        v = getattr(msg, f.name)
        if f.is_repeated:
            v = [_info(x) if f.message_type is not None else x for x in v]
        out[f.name] = v
    return out


def load_run_spec(path: Path) -> dict[str, Any]:
    """A run spec file (TOML): ``parties = [...]``, optional ``run_id``, ``policy``,
    ``deadline_seconds`` and a ``[params]`` table of any MechanismParams fields
    (:func:`fedhh.run.settings.params_from_table`); without ``m`` the run takes the item width
    of the parties' codec."""
    try:
        doc = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ParameterError(f"{path}: {exc}") from None
    known = {"run_id", "parties", "policy", "deadline_seconds", "params"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ParameterError(f"{path}: unknown key(s) {', '.join(unknown)}")
    parties = doc.get("parties")
    if not isinstance(parties, list) or not parties or not all(isinstance(p, str) for p in parties):
        raise ParameterError(f"{path}: 'parties' must be a non-empty list of party ids")
    params = doc.get("params", {})
    if not isinstance(params, dict):
        raise ParameterError(f"{path}: [params] must be a table")
    deadline = doc.get("deadline_seconds", 0.0)
    if isinstance(deadline, bool) or not isinstance(deadline, (int, float)):
        raise ParameterError(f"{path}: deadline_seconds must be a number, got {deadline!r}")
    if not (math.isfinite(deadline) and deadline >= 0):
        raise ParameterError(f"{path}: deadline_seconds must be ≥ 0 (0: the coordinator's)")
    for key in ("run_id", "policy"):
        if key in doc and not isinstance(doc[key], str):
            raise ParameterError(f"{path}: {key} must be a string, got {doc[key]!r}")
    return {
        "params": params_from_table(params),
        "party_ids": parties,
        "run_id": str(doc.get("run_id", "")),
        "policy": str(doc.get("policy", "continue")),
        "deadline_seconds": float(deadline),
        "infer_m": "m" not in params,  # the coordinator takes the parties' item width
    }


class AnalystClient(ServiceClient):
    """Start, follow and read runs at a coordinator."""

    stub = analyst_pb2_grpc.AnalystServiceStub

    def __init__(self, target: str, *, timeout: float = 30.0, **kw: Any) -> None:
        super().__init__(target, timeout=timeout, **kw)

    def start(
        self,
        params: MechanismParams,
        party_ids: Sequence[str],
        *,
        run_id: str = "",
        policy: str = "continue",
        deadline_seconds: float = 0.0,
        infer_m: bool = False,
    ) -> dict[str, Any]:
        """Start a run; ``infer_m``: leave ``params.m`` out, so that the coordinator takes the
        item width of the parties' codec."""
        req = analyst_pb2.StartRunRequest(
            run_id=run_id,
            params=params_to_pb(params, omit=("m",) if infer_m else ()),
            party_ids=list(party_ids),
            policy=policy,
            deadline_seconds=deadline_seconds,
        )
        return _info(self._call("StartRun", req))

    def start_file(self, path: Path) -> dict[str, Any]:
        spec = load_run_spec(path)
        return self.start(
            spec["params"],
            spec["party_ids"],
            run_id=spec["run_id"],
            policy=spec["policy"],
            deadline_seconds=spec["deadline_seconds"],
            infer_m=spec["infer_m"],
        )

    def runs(self) -> list[dict[str, Any]]:
        return [_info(r) for r in self._call("ListRuns", analyst_pb2.ListRunsRequest()).runs]

    def status(self, run_id: str) -> dict[str, Any]:
        return _info(self._call("GetStatus", analyst_pb2.RunRef(run_id=run_id)))

    def top(self, run_id: str, k: int = 0) -> list[dict[str, Any]]:
        resp = self._call("GetTop", analyst_pb2.TopRequest(run_id=run_id, k=k))
        return [
            {
                "rank": r.rank,
                "item": r.item,
                "code": r.code,
                "code_hex": r.code_hex,
                "bytes_hex": r.item_bytes.hex(),
                "estimate": r.estimate,
                "stderr": r.stderr,
                "parties": r.parties,
            }
            for r in resp.rows
        ]

    def document(self, run_id: str) -> dict[str, Any]:
        """The full result document (``fedhh.result/1``)."""
        resp = self._call("GetTop", analyst_pb2.TopRequest(run_id=run_id, k=0))
        doc: dict[str, Any] = json.loads(resp.document_json)
        return doc

    def freq(self, run_id: str, items: Sequence[str | bytes]) -> list[dict[str, Any]]:
        """Estimates of ``items`` (text, or bytes for items that are not UTF-8); the rows give
        the text items first, then the bytes."""
        text = [i for i in items if isinstance(i, str)]
        raw = [bytes(i) for i in items if not isinstance(i, str)]
        resp = self._call(
            "GetFrequency",
            analyst_pb2.FrequencyRequest(run_id=run_id, items=text, item_bytes=raw),
        )
        return [
            MessageToDict(
                r, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
            for r in resp.rows
        ]

    def cost(self, run_id: str) -> dict[str, Any]:
        resp = self._call("GetCost", analyst_pb2.RunRef(run_id=run_id))
        return {"cost": json.loads(resp.cost_json), "privacy": json.loads(resp.privacy_json)}

    def cancel(self, run_id: str) -> dict[str, Any]:
        return _info(self._call("CancelRun", analyst_pb2.RunRef(run_id=run_id)))

    def parties(self) -> list[dict[str, Any]]:
        """Registered parties: last heartbeat, user count, source and privacy budget."""
        resp = self._call("ListParties", analyst_pb2.ListPartiesRequest())
        return [_info(p) for p in resp.parties]

    def watch(self, run_id: str, timeout: float = 600.0) -> Iterator[dict[str, Any]]:
        """The run's status now and at every change, streamed by the coordinator (WatchRun),
        ending with its final one (done, failed, cancelled). After ``timeout`` seconds it raises
        :class:`TransportError` DEADLINE_EXCEEDED naming the last state; the run goes on."""
        last = "unknown"
        try:
            stream = self._stub.WatchRun(
                analyst_pb2.RunRef(run_id=run_id), timeout=timeout, metadata=self._auth or None
            )
            for msg in stream:
                info = _info(msg)
                last = info["state"]
                yield info
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TransportError("DEADLINE_EXCEEDED", f"run {run_id} still {last}") from None
            raise TransportError(exc.code().name, exc.details() or "") from None

    def wait(
        self,
        run_id: str,
        timeout: float = 600.0,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Follow the run (:meth:`watch`) until it is done, failed or cancelled (``timeout``
        seconds at most); ``progress`` is told of every change."""
        for info in self.watch(run_id, timeout):
            if progress is not None:
                progress(info)
            if info["state"] in FINAL_STATES:
                return info
        raise TransportError("UNAVAILABLE", f"the coordinator ended the watch of run {run_id}")
