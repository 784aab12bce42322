"""Checking device reports at the rate they arrive.

A device of wire version 2 sends its report as a ``Report`` message (docs/device-wire.md):
:class:`~fedhh.clients.device_wire.ReportFields` checks its fields and packs it into the
canonical frame the agent stores. A device of version 1 sends that frame itself,
``Reports.to_bytes()`` of exactly one report of the open task's oracle. For one
task every such report has the same bytes up to its values: the same header (kind, size, fields)
and the same length. :class:`ReportChecker` compares that fixed part with a template and checks
the values of a whole batch at once with numpy against the limits the oracle's report layout
declares (:meth:`~fedhh.oracles.FrequencyOracle.report_layout`: symbols and buckets below its
output size, seed indices below the pool's); a report in another (still valid) encoding is parsed
and checked field by field instead (:func:`check_single_report`). Nothing a device sends can
raise anything but a refusal.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from fedhh.clients.device_wire import ReportFields
from fedhh.errors import FedHHError, ReportError
from fedhh.oracles import FrequencyOracle, Reports

MAX_REPORT_BYTES = 1 << 16
_HEAD = struct.Struct("<4sBI")  # fedhh.core.framing's frame header


def report_template(oracle: FrequencyOracle, candidates: np.ndarray) -> Reports:
    """One report of the oracle's layout over the task's candidates (every value zero): the
    shape every device report must have."""
    return oracle.report_layout(int(candidates.size)).template()


def check_single_report(
    data: bytes,
    oracle: FrequencyOracle,
    candidates: np.ndarray,
    template: Reports | None = None,
) -> Reports:
    """Parse one device report and check it is exactly one report of this task's oracle
    (ReportError otherwise, whatever the bytes)."""
    if len(data) > MAX_REPORT_BYTES:
        raise ReportError(f"report of {len(data)} bytes exceeds {MAX_REPORT_BYTES}")
    try:
        rep = Reports.from_bytes(data)
    except FedHHError:
        raise
    except (ValueError, TypeError, KeyError, OverflowError, RecursionError, MemoryError) as exc:
        raise ReportError(f"malformed report: {type(exc).__name__}") from None
    if rep.n != 1:
        raise ReportError(f"a device sends exactly one report, got {rep.n}")
    if template is None:
        template = report_template(oracle, candidates)
    if rep.kind != template.kind or rep.size != template.size:
        raise ReportError(
            f"report of {rep.kind} over {rep.size} symbols; the task wants {template.kind} over "
            f"{template.size}"
        )
    for name, arr in template.arrays.items():
        got = rep.arrays.get(name)
        if got is None or got.dtype != arr.dtype or got.shape != arr.shape:
            raise ReportError(f"report field {name!r} must be {arr.dtype} of shape {arr.shape}")
    if set(rep.arrays) != set(template.arrays):
        raise ReportError(f"report fields must be {sorted(template.arrays)}")
    for name, limit in oracle.report_layout(int(candidates.size)).limits.items():
        if int(rep.arrays[name].max()) >= limit:
            raise ReportError(f"report field {name!r} out of range (must be < {limit})")
    return rep


class ReportChecker:
    """The reports of one task: a fast path for the canonical encoding, the full parse else."""

    def __init__(self, oracle: FrequencyOracle, candidates: np.ndarray) -> None:
        self.oracle, self.candidates = oracle, candidates
        self.template = report_template(oracle, candidates)
        canon = self.template.to_bytes()
        self.length = len(canon)
        _, _, hlen = _HEAD.unpack_from(canon)
        self.head = canon[: _HEAD.size + hlen]
        header = json.loads(canon[_HEAD.size : _HEAD.size + hlen])
        names, formats, offsets = [], [], []
        for name, (dtype, shape, offset, _) in header["fields"].items():
            names.append(name)
            formats.append((np.dtype(dtype).newbyteorder("<"), tuple(shape[1:])))
            offsets.append(offset)
        self.layout = np.dtype(
            {
                "names": names,
                "formats": formats,
                "offsets": offsets,
                "itemsize": self.length - len(self.head),
            }
        )
        self.limits = oracle.report_layout(int(candidates.size)).limits
        self.fields = ReportFields(oracle.report_layout(int(candidates.size)))
        # the limited values of one report: (start, end) of their bytes and the limit
        start = len(self.head)
        self.scalars: list[tuple[int, int, int]] = []
        for name in self.limits:
            _, shape, offset, nbytes = header["fields"][name]
            if list(shape) != [1]:  # pragma: no cover - every limited field is one value
                self.scalars.clear()
                break
            self.scalars.append((start + offset, start + offset + nbytes, self.limits[name]))

    def parse(self, reports: Sequence[bytes]) -> Reports:
        """Stored reports of this task (checked when they came) as one batch: the canonical
        ones read at once with numpy, any other encoding parsed alone."""
        start, n = len(self.head), len(reports)
        whole = b"".join(reports)
        if len(whole) == n * self.length:  # every one of the canonical length: no loop
            rows = np.frombuffer(whole, dtype=np.uint8).reshape(n, self.length)
            head = np.frombuffer(self.head, dtype=np.uint8)
            if bool((rows[:, :start] == head).all()):
                values = np.ascontiguousarray(rows[:, start:]).view(self.layout).reshape(n)
                return self._batch(values)
        canon = [r for r in reports if len(r) == self.length and r[:start] == self.head]
        batch = self._batch(np.frombuffer(b"".join(r[start:] for r in canon), dtype=self.layout))
        for r in reports:
            if not (len(r) == self.length and r[:start] == self.head):
                batch = batch.concat(Reports.from_bytes(r))
        return batch

    def _batch(self, values: np.ndarray) -> Reports:
        kind, size = self.template.kind, self.template.size
        return Reports(
            kind,
            size,
            {
                k: np.ascontiguousarray(values[k]).reshape(len(values), *v.shape[1:])
                for k, v in self.template.arrays.items()
            },
        )

    def check(self, reports: Sequence[bytes]) -> list[str | None]:
        """None for each good report, else why it is refused."""
        if len(reports) == 1 and (self.scalars or not self.limits):  # one report: no numpy
            r = reports[0]
            if len(r) == self.length and r.startswith(self.head):
                for a, b, limit in self.scalars:
                    if int.from_bytes(r[a:b], "little") >= limit:
                        return ["report value out of range for the task's oracle"]
                return [None]
        out: list[str | None] = [None] * len(reports)
        fast = [
            i
            for i, r in enumerate(reports)
            if len(r) == self.length and r[: len(self.head)] == self.head
        ]
        if fast:
            start = len(self.head)
            body = b"".join(reports[i][start:] for i in fast)
            values = np.frombuffer(body, dtype=self.layout)
            bad = np.zeros(len(fast), dtype=bool)
            for name, limit in self.limits.items():
                bad |= values[name].reshape(len(fast), -1).max(axis=1) >= limit
            for j in np.flatnonzero(bad):
                out[fast[j]] = "report value out of range for the task's oracle"
        slow = set(range(len(reports))) - set(fast)
        for i in sorted(slow):
            try:
                check_single_report(reports[i], self.oracle, self.candidates, self.template)
            except ReportError as exc:
                out[i] = str(exc)
        return out

    def frames(self, reports: Sequence[bytes | Any]) -> tuple[list[bytes], list[str | None]]:
        """The frame to store of each report (a ``Report`` message packed, a version-1 frame
        as it is; ``b""`` where refused) and why each refused one is refused (None: good)."""
        frames: list[bytes] = [b""] * len(reports)
        problems: list[str | None] = [None] * len(reports)
        old = [i for i, r in enumerate(reports) if isinstance(r, bytes)]
        for i, problem in zip(
            old, self.check([reports[i] for i in old]) if old else [], strict=True
        ):
            problems[i] = problem
            if problem is None:
                frames[i] = reports[i]
        for i, r in enumerate(reports):
            if not isinstance(r, bytes):
                try:
                    frames[i] = self.fields.frame(r)
                except ReportError as exc:
                    problems[i] = str(exc)
        return frames, problems
