"""Protocol messages in Flower records: the one place where the Flower transport converts them.

Both Flower apps (:mod:`fedhh.server.flower_app`, :mod:`fedhh.clients.flower_app`) use these
converters, so the ServerApp and the ClientApp always agree on the layout.

One Flower message per protocol step, with a named query action:

* ``query.discover`` — the ServerApp asks a node which party it serves. Request: empty
  ``ConfigRecord`` "discover". Reply: ``ConfigRecord`` "party" with ``party-id``, ``users``,
  ``codec`` (``"str:W"``/``"int:B"``), ``order`` (the node's partition id, or -1) and ``data``
  (a description of the node's data source, used to recompute the ground truth of a synthetic
  federation on the server).
* ``query.estimate`` / ``query.search`` — one :class:`~fedhh.protocol.Request`. Records:

  - ``ConfigRecord`` "spec": the :class:`~fedhh.protocol.RunSpec` (``run-id``, ``version``,
    ``codec``, ``party-ids`` and ``party-sizes`` as lists, and every set mechanism parameter as
    ``param.<name>``); every request carries it, so a ClientApp needs no earlier set-up message;
  - ``ConfigRecord`` "request": the envelope (``version``, ``run-id``, ``request-id``, ``round``,
    ``party-id``) and the task's scalars (``level``, ``length``, ``group`` for an estimate;
    ``mode``, ``start-length`` for a search);
  - ``ArrayRecord`` "arrays": ``candidates`` (uint64) for an estimate; ``start-prefixes``,
    ``prior-items`` (uint64) and ``prior-estimates`` (float64) for a search.

* The :class:`~fedhh.protocol.Reply` to either: ``ConfigRecord`` "reply" (envelope, ``result`` =
  ``"estimate"``/``"search"``/``"error"``, the error's ``code``/``message``, the levels' oracle
  names), ``ArrayRecord`` "arrays" (``estimates``, ``stderrs`` float64; ``items`` uint64 for a
  search) and ``MetricRecord`` "cost" (one list per :class:`~fedhh.mechanisms.tasks.LevelCost`
  field, one entry per estimation level).

Arrays travel as ``ArrayRecord`` entries (numpy ``.npy`` bytes, no pickle). Decoding checks the
record layout, dtypes and shapes and raises :class:`~fedhh.errors.ProtocolError` on any mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedhh.errors import FedHHError, ProtocolError
from fedhh.mechanisms.params import MechanismParams
from fedhh.mechanisms.tasks import (
    ErrorResult,
    EstimateResult,
    EstimateTask,
    LevelCost,
    SearchResult,
    SearchTask,
)
from fedhh.protocol.messages import Reply, Request, Result, RunSpec

DISCOVER = "query.discover"
ESTIMATE = "query.estimate"
SEARCH = "query.search"
MESSAGE_TYPES = (DISCOVER, ESTIMATE, SEARCH)

_PARAM = "param."
_COST_INT_FIELDS = tuple(
    f.name for f in fields(LevelCost) if f.name != "oracle"
)  # length, step, candidates, reports, hash_evaluations, report_bytes


# --- discovery -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PartyInfo:
    """What a node tells the ServerApp in the discovery step."""

    party_id: str
    users: int
    codec: str
    order: int = -1
    data: str = ""


def discover_content() -> RecordDict:
    return RecordDict({"discover": ConfigRecord({})})


def party_info_to_content(info: PartyInfo) -> RecordDict:
    return RecordDict(
        {
            "party": ConfigRecord(
                {
                    "party-id": info.party_id,
                    "users": int(info.users),
                    "codec": info.codec,
                    "order": int(info.order),
                    "data": info.data,
                }
            )
        }
    )


def party_info_from_content(content: RecordDict) -> PartyInfo:
    rec = _config(content, "party")
    return PartyInfo(
        party_id=_get(rec, "party-id", str),
        users=_get(rec, "users", int),
        codec=_get(rec, "codec", str),
        order=_get(rec, "order", int),
        data=_get(rec, "data", str),
    )


# --- run spec ------------------------------------------------------------------------------


def spec_to_record(spec: RunSpec) -> ConfigRecord:
    rec: dict[str, Any] = {
        "run-id": spec.run_id,
        "version": spec.version,
        "codec": spec.codec,
        "party-ids": list(spec.party_ids),
        "party-sizes": [int(n) for n in spec.party_sizes],
    }
    for name, value in spec.params.to_dict().items():
        if value is not None:  # None = the mechanism's default: simply left out
            rec[_PARAM + name] = value
    return ConfigRecord(rec)


def spec_from_record(rec: ConfigRecord) -> RunSpec:
    params = {k[len(_PARAM) :]: v for k, v in rec.items() if k.startswith(_PARAM)}
    try:
        return RunSpec(
            run_id=_get(rec, "run-id", str),
            params=MechanismParams.from_dict(params),
            party_ids=tuple(_get_list(rec, "party-ids", str)),
            party_sizes=tuple(_get_list(rec, "party-sizes", int)),
            codec=_get(rec, "codec", str),
            version=_get(rec, "version", int),
        )
    except ProtocolError:
        raise
    except (FedHHError, TypeError) as exc:
        raise ProtocolError(f"invalid run spec in Flower message: {exc}") from None


# --- requests ------------------------------------------------------------------------------


def message_type_of(request: Request) -> str:
    """The Flower message type (query action) of a request."""
    return ESTIMATE if isinstance(request.task, EstimateTask) else SEARCH


def request_to_content(spec: RunSpec, request: Request) -> RecordDict:
    env: dict[str, Any] = {
        "version": request.version,
        "run-id": request.run_id,
        "request-id": request.request_id,
        "round": request.round,
        "party-id": request.party_id,
    }
    task = request.task
    if isinstance(task, EstimateTask):
        env.update(task="estimate", level=task.level, length=task.length, group=task.group)
        arrays = {"candidates": _u64(task.candidates)}
    else:
        env.update(task="search", mode=task.mode, **{"start-length": task.start_length})
        arrays = {
            "start-prefixes": _u64(task.start_prefixes),
            "prior-items": _u64(task.prior_items),
            "prior-estimates": _f64(task.prior_estimates),
        }
    return RecordDict(
        {
            "spec": spec_to_record(spec),
            "request": ConfigRecord(env),
            "arrays": _array_record(arrays),
        }
    )


def request_from_content(content: RecordDict, message_type: str) -> tuple[RunSpec, Request]:
    spec = spec_from_record(_config(content, "spec"))
    env = _config(content, "request")
    arrays = _arrays(content, "arrays")
    kind = _get(env, "task", str)
    task: EstimateTask | SearchTask
    if kind == "estimate":
        task = EstimateTask(
            level=_get(env, "level", int),
            length=_get(env, "length", int),
            candidates=_array(arrays, "candidates", np.uint64),
            group=_get(env, "group", str),
        )
    elif kind == "search":
        task = SearchTask(
            mode=_get(env, "mode", str),
            start_length=_get(env, "start-length", int),
            start_prefixes=_array(arrays, "start-prefixes", np.uint64),
            prior_items=_array(arrays, "prior-items", np.uint64),
            prior_estimates=_array(arrays, "prior-estimates", np.float64),
        )
    else:
        raise ProtocolError(f"unknown task kind {kind!r} in Flower message")
    expected = ESTIMATE if kind == "estimate" else SEARCH
    if message_type != expected:
        raise ProtocolError(f"a {kind} task arrived as message type {message_type!r}")
    request = Request(
        run_id=_get(env, "run-id", str),
        request_id=_get(env, "request-id", int),
        round=_get(env, "round", int),
        party_id=_get(env, "party-id", str),
        task=task,
        version=_get(env, "version", int),
    )
    return spec, request


# --- replies -------------------------------------------------------------------------------


def reply_to_content(reply: Reply) -> RecordDict:
    env: dict[str, Any] = {
        "version": reply.version,
        "run-id": reply.run_id,
        "request-id": reply.request_id,
        "party-id": reply.party_id,
    }
    result = reply.result
    arrays: dict[str, np.ndarray] = {}
    levels: tuple[LevelCost, ...] = ()
    if isinstance(result, ErrorResult):
        env.update(result="error", code=result.code, message=result.message)
    elif isinstance(result, EstimateResult):
        env["result"] = "estimate"
        arrays = {"estimates": _f64(result.estimates), "stderrs": _f64(result.stderrs)}
        levels = (result.cost,)
    else:
        env["result"] = "search"
        arrays = {
            "items": _u64(result.items),
            "estimates": _f64(result.estimates),
            "stderrs": _f64(result.stderrs),
        }
        levels = result.levels
    env["oracles"] = [lv.oracle for lv in levels]
    cost = MetricRecord(
        {name: [int(getattr(lv, name)) for lv in levels] for name in _COST_INT_FIELDS}
    )
    return RecordDict({"reply": ConfigRecord(env), "arrays": _array_record(arrays), "cost": cost})


def reply_from_content(content: RecordDict) -> Reply:
    env = _config(content, "reply")
    kind = _get(env, "result", str)
    result: Result
    if kind == "error":
        result = ErrorResult(_get(env, "code", str), _get(env, "message", str))
    else:
        arrays = _arrays(content, "arrays")
        levels = _levels(env, content)
        if kind == "estimate":
            if len(levels) != 1:
                raise ProtocolError("an estimate reply needs exactly one level cost")
            result = EstimateResult(
                estimates=_array(arrays, "estimates", np.float64),
                stderrs=_array(arrays, "stderrs", np.float64),
                cost=levels[0],
            )
        elif kind == "search":
            result = SearchResult(
                items=_array(arrays, "items", np.uint64),
                estimates=_array(arrays, "estimates", np.float64),
                stderrs=_array(arrays, "stderrs", np.float64),
                levels=levels,
            )
        else:
            raise ProtocolError(f"unknown result kind {kind!r} in Flower message")
    return Reply(
        run_id=_get(env, "run-id", str),
        request_id=_get(env, "request-id", int),
        party_id=_get(env, "party-id", str),
        result=result,
        version=_get(env, "version", int),
    )


def _levels(env: ConfigRecord, content: RecordDict) -> tuple[LevelCost, ...]:
    oracles = _get_list(env, "oracles", str)
    if "cost" not in content.metric_records:
        raise ProtocolError("Flower reply has no 'cost' metric record")
    cost = content.metric_records["cost"]
    columns: dict[str, list[int]] = {}
    for name in _COST_INT_FIELDS:
        col = cost.get(name)
        if not isinstance(col, list) or len(col) != len(oracles):
            raise ProtocolError(f"Flower reply: cost field {name!r} needs {len(oracles)} entries")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in col):
            raise ProtocolError(f"Flower reply: cost field {name!r} must hold integers")
        columns[name] = [int(v) for v in col]
    return tuple(
        LevelCost(oracle=o, **{name: columns[name][i] for name in _COST_INT_FIELDS})
        for i, o in enumerate(oracles)
    )


# --- helpers -------------------------------------------------------------------------------


def _u64(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.uint64)


def _f64(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)


def _array_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    rec = ArrayRecord()
    for name, arr in arrays.items():
        rec[name] = Array(arr)
    return rec


def _config(content: RecordDict, name: str) -> ConfigRecord:
    if name not in content.config_records:
        raise ProtocolError(f"Flower message has no {name!r} config record")
    return content.config_records[name]


def _arrays(content: RecordDict, name: str) -> ArrayRecord:
    if name not in content.array_records:
        raise ProtocolError(f"Flower message has no {name!r} array record")
    return content.array_records[name]


def _array(rec: ArrayRecord, name: str, dtype: type[np.generic]) -> Any:
    if name not in rec:
        raise ProtocolError(f"Flower message lacks the array {name!r}")
    try:
        arr = rec[name].numpy()
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"array {name!r} cannot be read: {exc}") from None
    if arr.dtype != np.dtype(dtype) or arr.ndim != 1:
        raise ProtocolError(
            f"array {name!r} must be one-dimensional {np.dtype(dtype).name}, "
            f"got {arr.dtype.name} of shape {arr.shape}"
        )
    return arr


def _get(rec: ConfigRecord, key: str, kind: type) -> Any:
    if key not in rec:
        raise ProtocolError(f"Flower message lacks the field {key!r}")
    value = rec[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"field {key!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _get_list(rec: ConfigRecord, key: str, kind: type) -> list[Any]:
    if key not in rec:
        raise ProtocolError(f"Flower message lacks the field {key!r}")
    value = rec[key]
    if not isinstance(value, list) or not all(
        isinstance(v, kind) and not (kind is int and isinstance(v, bool)) for v in value
    ):
        raise ProtocolError(f"field {key!r} must be a list of {kind.__name__}")
    return list(value)


__all__ = [
    "DISCOVER",
    "ESTIMATE",
    "MESSAGE_TYPES",
    "SEARCH",
    "PartyInfo",
    "discover_content",
    "message_type_of",
    "party_info_from_content",
    "party_info_to_content",
    "reply_from_content",
    "reply_to_content",
    "request_from_content",
    "request_to_content",
    "spec_from_record",
    "spec_to_record",
]
