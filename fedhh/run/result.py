"""Presenting a run: the machine-readable result document (``--output result.json``) and the
terminal table. One place for both, used by the CLI and the transports' analyst APIs.

Result document (``"format": "fedhh.result/1"``):

* ``run_id``, ``mechanism``, ``params`` — the resolved run parameters;
* ``top_k`` — list of ``{rank, item, code, estimate, stderr, significant, parties}`` (``item``
  decoded with the run's codec: text, with bytes that are not UTF-8 escaped as ``\\xff``;
  ``code`` the m-bit code: an integer up to 64 bits, above a string ``"0x…"`` of 2·⌈m/8⌉ hex
  digits; ``significant`` whether the estimate is above the noise bar; ``parties`` how many
  parties contributed an estimate), plus ``bytes_hex`` for string items: the item's exact bytes
  (padding stripped) in hex, lossless whatever the display shows;
* ``significance`` — the noise bar: ``z`` = Φ̄⁻¹(``alpha`` / ``candidates``), Bonferroni over the
  candidates of the last full-length levels (a shared level once, the parties' own added up),
  ``alpha`` the run's ``answer_alpha`` (0.05 for a top-k answer). Every mechanism answers only
  rows above it (one rule, docs/mechanisms.md §5), so an answer may hold fewer than k rows; in a
  top-k answer (``answer_alpha = 0``) a row below z·stderr could be noise (the table marks it
  ``?``);
* ``cost`` — ``rounds``, ``bytes_to_parties``, ``bytes_to_coordinator``, ``reports_per_party``,
  ``user_report_bytes``, ``hash_evaluations``, ``wall_seconds`` and ``levels`` (one entry per
  estimation level: party, round, phase (``shared``, ``local``, ``completion``, or ``length``
  for the item-length level), length, step, candidates, reports, oracle, ...);
* ``plan`` — the level plan the run followed (docs/mechanisms.md, "The level plan"): ``rule``
  (``step_rule``), ``level_candidates`` and ``final_weight`` as resolved, ``shared`` (the
  lengths of the levels all parties estimated together) and, per party, the ``lengths``,
  ``steps``, ``candidates``, ``users`` and ``oracles`` of its levels in order (a view of
  ``cost.levels``), and ``length_users`` when a share of its users reported their item's length
  for the plan (text items wider than 64 bits, docs/mechanisms.md §10);
* ``privacy`` — ε, reports per user, the oracles used and a plain statement;
* ``failed_parties``, ``notes``; and ``evaluation`` (precision, recall, F1, NCR, ARE) when the
  ground truth is known (synthetic, AOL or baby-names data, party files), with ``reference``:
  the known-domain reference (docs/mechanisms.md §8; ``oracle``, ``domain``, ``draws``, mean
  ``f1``, ``ncr``, ... and their ``*_std`` over the draws) when the caller computed it;
* ``dataset`` (when the caller knows it): ``name``, ``users``, ``parties``, ``party_sizes``,
  ``party_names`` (real federations), ``distinct_items``, ``m`` and ``params`` — how the data
  was made, and ``truncated`` (``item_bytes``, ``distinct``, ``users``) when the data was loaded
  with truncation: how many distinct items and users had items longer than the width cut.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from fedhh.core import codes as cd
from fedhh.core.items import IntCodec, StringCodec
from fedhh.core.metrics import Scores
from fedhh.core.table import clip, text_table
from fedhh.mechanisms.strategies import NOISE_KEEP, noise_candidates
from fedhh.oracles import noise_z
from fedhh.protocol import RunResult

RESULT_FORMAT = "fedhh.result/1"
ITEM_CELLS = 44  # terminal cells of the table's item column at most (longer items are cut)
NOISE_ALPHA = NOISE_KEEP  # a row of a top-k answer is significant when noise reaches it w.p. < 5%


def _json_safe(values: Mapping[str, Any]) -> dict[str, Any]:
    """NaN floats as None (JSON has no NaN)."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()}


def code_labels(codes: np.ndarray, m: int) -> list[int | str]:
    """The result document's ``code`` of each item: the integer up to 64 bits, above a string
    ``"0x"`` + the 2·⌈m/8⌉ hex digits of the code's big-endian bytes."""
    if m <= 64:
        return [int(c) for c in np.asarray(codes).tolist()]
    nb = -(-m // 8)
    raw = cd.to_bytes(codes, m)
    return ["0x" + raw[i : i + nb].hex() for i in range(0, len(raw), nb)]


def codes_from_labels(labels: list[int | str], m: int) -> cd.Codes:
    """The codes of :func:`code_labels`' labels (its inverse: integers up to 64 bits, ``"0x…"``
    hex strings above)."""
    if m <= 64:
        return np.array([int(c) for c in labels], dtype=np.uint64)
    if not labels:
        return cd.empty(m)
    return cd.from_bytes(b"".join(bytes.fromhex(code_hex(c, m)) for c in labels), m)


def result_from_document(doc: Mapping[str, Any]) -> RunResult:
    """The run's result from its result document (floats survive JSON; codes of any width)."""
    rows = doc["top_k"]
    return RunResult(
        run_id=str(doc["run_id"]),
        mechanism=str(doc["mechanism"]),
        items=codes_from_labels([r["code"] for r in rows], int(doc["params"]["m"])),
        estimates=np.array([r["estimate"] for r in rows], dtype=np.float64),
        stderrs=np.array([r["stderr"] for r in rows], dtype=np.float64),
        contributors=np.array([r["parties"] for r in rows], dtype=np.int64),
        params=dict(doc["params"]),
        cost=dict(doc["cost"]),
        privacy=dict(doc["privacy"]),
        notes=list(doc["notes"]),
        failed_parties=list(doc["failed_parties"]),
    )


def code_hex(code: int | str, m: int) -> str:
    """A ``code`` of the result document as the 2·⌈m/8⌉ hex digits of its big-endian bytes."""
    if isinstance(code, str):
        return code.removeprefix("0x")
    return f"{code:0{2 * max(1, -(-m // 8))}x}"


@dataclass(frozen=True)
class NoiseBar:
    """The z-score above which a row's estimate is unlikely to be noise: Bonferroni over the
    candidates N of the last (full-length) levels, z = Φ̄⁻¹(α / N). α is the run's answer bar
    (``answer_alpha``, docs/mechanisms.md §5), so every row TAP/TAPS answer passes it; a run
    that answers its top-k (α = 0) is marked at α = NOISE_ALPHA."""

    alpha: float
    z: float
    candidates: int


def noise_bar(levels: list[dict[str, Any]], m: int | None, alpha: float = 0.0) -> NoiseBar:
    """The :class:`NoiseBar` of a run from its per-level cost records (each party's last
    full-length level; :func:`~fedhh.mechanisms.strategies.noise_candidates`) and its
    ``answer_alpha``."""
    last: dict[Any, tuple[bool, int]] = {}
    for lv in levels:
        if (m is None or int(lv["length"]) == m) and lv.get("phase") != "completion":
            last[lv["party"]] = (lv.get("phase") == "shared", int(lv["candidates"]))
    n = noise_candidates(last.values())
    alpha = alpha if alpha > 0 else NOISE_ALPHA
    return NoiseBar(alpha, noise_z(n, alpha), n)


def answer_at(result: RunResult, alpha: float) -> RunResult:
    """The same run answered under the noise bar of ``alpha`` (0: its rows as they are): the
    rows whose estimate exceeds z·SE, z = Φ̄⁻¹(α / N), N its last levels' candidates
    (:func:`noise_bar`). Post-processing of the estimates, so the privacy is unchanged; a run
    made with ``answer_alpha = 0`` and cut here answers as the run made at ``alpha``."""
    if alpha <= 0:
        return result
    bar = noise_bar(result.cost.get("levels", []), result.params.get("m"), alpha)
    keep = np.flatnonzero(np.asarray(result.estimates) > bar.z * np.asarray(result.stderrs))
    return replace(
        result,
        items=result.items[keep],
        estimates=np.asarray(result.estimates)[keep],
        stderrs=np.asarray(result.stderrs)[keep],
        contributors=np.asarray(result.contributors)[keep],
        params={**result.params, "answer_alpha": float(alpha)},
    )


def result_document(
    result: RunResult,
    codec: StringCodec | IntCodec,
    scores: Scores | None = None,
    *,
    dataset: Mapping[str, Any] | None = None,
    reference: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON-serialisable document of a run (``dataset``: the dataset's ``summary()``;
    ``reference``: its known-domain reference, ``FederatedDataset.reference``)."""
    n = cd.count(result.items)
    items = codec.decode(result.items) if n else []
    bar = noise_bar(
        result.cost.get("levels", []),
        result.params.get("m"),
        float(result.params.get("answer_alpha") or 0.0),
    )
    top = [
        {
            "rank": i + 1,
            "item": item,
            "code": code,
            "estimate": float(est),
            "stderr": float(se),
            "significant": bool(est > bar.z * se),
            "parties": int(c),
        }
        for i, (item, code, est, se, c) in enumerate(
            zip(
                items,
                code_labels(result.items, codec.m),
                result.estimates,
                result.stderrs,
                np.asarray(result.contributors),
                strict=True,
            )
        )
    ]
    if isinstance(codec, StringCodec) and n:
        for row, raw in zip(top, codec.item_bytes(result.items), strict=True):
            row["bytes_hex"] = raw.hex()
    doc: dict[str, Any] = {
        "format": RESULT_FORMAT,
        "run_id": result.run_id,
        "mechanism": result.mechanism,
        "params": result.params,
        "top_k": top,
        "significance": {"alpha": bar.alpha, "z": bar.z, "candidates": bar.candidates},
        "cost": result.cost,
        "plan": plan_of(result.params, result.cost.get("levels", [])),
        "privacy": result.privacy,
        "failed_parties": result.failed_parties,
        "notes": result.notes,
    }
    if dataset is not None:
        doc["dataset"] = dict(dataset)
    if scores is not None:
        doc["evaluation"] = _json_safe(scores.as_dict())
    if reference is not None:
        doc.setdefault("evaluation", {})["reference"] = _json_safe(reference)
    return doc


def plan_of(params: Mapping[str, Any], levels: list[dict[str, Any]]) -> dict[str, Any]:
    """The level plan of a run from its resolved parameters and its per-level cost records."""
    parties: dict[str, dict[str, list[Any]]] = {}
    shared: list[int] = []
    for lv in levels:
        if lv.get("phase") == "shared" and lv["length"] not in shared:
            shared.append(int(lv["length"]))
        mine = parties.setdefault(
            str(lv["party"]),
            {"lengths": [], "steps": [], "candidates": [], "users": [], "oracles": []},
        )
        if lv.get("phase") == "length":  # the item-length level of wide text items (§10)
            mine["length_users"] = lv["reports"]
            continue
        for key, field in (
            ("lengths", "length"),
            ("steps", "step"),
            ("candidates", "candidates"),
            ("users", "reports"),
            ("oracles", "oracle"),
        ):
            mine[key].append(lv[field])
    return {
        "rule": params.get("step_rule"),
        "level_candidates": params.get("level_candidates"),
        "final_weight": params.get("final_weight"),
        "shared": shared,
        "parties": parties,
    }


def _plan_line(plan: Mapping[str, Any]) -> str:
    """One line: the shared lengths (marked *) and the longest party plan's lengths."""
    if not plan["parties"]:
        return ""
    longest = max(plan["parties"].values(), key=lambda p: len(p["lengths"]))
    marks = [f"{n}*" if n in plan["shared"] else str(n) for n in longest["lengths"]]
    users = sum(longest["users"]) or 1
    shares = "/".join(f"{100 * u / users:.0f}" for u in longest["users"])
    return (
        f"levels {' → '.join(marks)} bits (* shared; users % {shares}; rule {plan['rule']}, "
        f"≤ {plan['level_candidates']:,} candidates a level)"
        if plan["level_candidates"]
        else f"levels {' → '.join(marks)} bits (* shared; users % {shares}; rule {plan['rule']})"
    )


def _shown(row: Mapping[str, Any]) -> str:
    """An item as the table shows it: text quoted, bytes that are not UTF-8 as a bytes literal
    (``b'www.b\\xc3'``), integers as they are."""
    if not isinstance(row["item"], str):
        return str(row["item"])
    if "bytes_hex" in row:
        raw = bytes.fromhex(row["bytes_hex"])
        try:
            return repr(raw.decode("utf-8"))
        except UnicodeDecodeError:
            return repr(raw)
    return repr(row["item"])


def format_table(doc: dict[str, Any], truth_counts: Mapping[int | str, int] | None = None) -> str:
    """A readable table of the top-k (with true counts, keyed by the rows' ``code``, when known)
    and the cost summary."""
    has_truth = truth_counts is not None
    head = ["rank", "item", "estimate ", "± stderr", *(["true"] if has_truth else []), "parties"]
    rows, doubtful = [], 0
    for row in doc["top_k"]:
        mark = "" if row.get("significant", True) else "?"
        doubtful += bool(mark)
        rows.append(
            [
                str(row["rank"]),
                clip(_shown(row), ITEM_CELLS),
                f"{row['estimate']:,.0f}{mark or ' '}",
                f"{row['stderr']:,.0f}",
                *([f"{truth_counts.get(row['code'], 0):,}"] if truth_counts is not None else []),
                str(row["parties"]),
            ]
        )
    lines = [
        f"{doc['mechanism'].upper()}  ε = {doc['params']['epsilon']:g}  "
        f"k = {doc['params']['k']}  m = {doc['params']['m']}  oracle = {doc['params']['oracle']}",
        "",
        text_table(head, rows, [True, False, *[True] * (len(head) - 2)]),
    ]
    sig = doc.get("significance", {})
    want, alpha = doc["params"].get("k"), doc["params"].get("answer_alpha")
    if want and alpha and len(doc["top_k"]) < want:
        lines.append(
            f"{len(doc['top_k'])} of the k = {want} items asked for are above the noise bar "
            f"({sig.get('z', 0):.1f} standard errors over {sig.get('candidates', 0):,} "
            "candidates); the others cannot be told from noise at this ε and user count "
            "(--answer-alpha 0 answers the top-k anyway)"
        )
    if doubtful:
        lines.append(
            f"? {doubtful} row(s) below {sig.get('z', 0):.1f} standard errors: noise alone reaches "
            f"that among the {sig.get('candidates', 0):,} candidates of the last levels with "
            f"probability ≥ {sig.get('alpha', NOISE_ALPHA):g}, so they may not be items the "
            "users hold"
        )
    cost = doc["cost"]
    lines += [
        "",
        f"rounds {cost['rounds']}   bytes to parties {cost['bytes_to_parties']:,}   "
        f"to coordinator {cost['bytes_to_coordinator']:,}   user reports "
        f"{doc['privacy']['users_reported']:,}   hash evaluations {cost['hash_evaluations']:,}"
        + (f"   wall {cost['wall_seconds']:.2f} s" if "wall_seconds" in cost else ""),
    ]
    if doc.get("plan") and _plan_line(doc["plan"]):
        lines.append(_plan_line(doc["plan"]))
    if "evaluation" in doc:
        ev = doc["evaluation"]
        lines.append(
            f"precision {ev['precision']:.3f}   recall {ev['recall']:.3f}   F1 {ev['f1']:.3f}   "
            f"NCR {ev['ncr']:.3f}   ARE " + ("n/a" if ev["are"] is None else f"{ev['are']:.3f}")
        )
    ref = doc.get("evaluation", {}).get("reference")
    if ref:
        lines.append(
            f"known-domain reference: F1 {ref['f1']:.3f} ± {ref['f1_std']:.3f}   "
            f"NCR {ref['ncr']:.3f} ± {ref['ncr_std']:.3f}   ({ref['oracle']} over all "
            f"{ref['domain']:,} items, every user once; mean ± std of {ref['draws']} draws)"
        )
    if doc["failed_parties"]:
        lines.append(f"parties that failed: {', '.join(doc['failed_parties'])}")
    lines.append(doc["privacy"]["statement"])
    return "\n".join(lines)
