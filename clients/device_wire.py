"""The device wire, version 2 (docs/device-wire.md): one ε-LDP report as the fields of the
protobuf ``Report`` message instead of a byte frame.

A report's message is derived from its oracle's :class:`~fedhh.oracles.ReportLayout`, never from
the oracle's name: the case of ``Report``'s oneof is the layout's kind (``-`` written ``_``), and
each field of the layout is the case message's field of the same name: a scalar ``uint32`` or
``uint64`` as that integer, ``uint8`` bytes of shape (k,) as ``bytes`` of exactly k. Every field
is proto3 ``optional``, so a field a client forgot is refused instead of read as 0.

:class:`ReportFields` is the party's side for one task: it checks a message field by field (the
case, each field's presence, length and limit) and packs it into the canonical frame of
:meth:`Reports.to_bytes` (what the agent stores, as version 1 did), with no JSON and no numpy.
:func:`report_to_pb` is the device's side; :func:`report_from_pb` decodes a message into the
oracle's :class:`~fedhh.oracles.Reports` (tests and tools).
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from fedhh.errors import ReportError
from fedhh.oracles import ReportLayout, Reports
from fedhh.wire.v1 import report_pb2

WIRE_VERSION = 2  # GetTaskRequest.wire_version of this SDK
_SCALAR_FORMATS = {"uint32": "I", "uint64": "Q"}


def case_of(kind: str) -> str:
    """The ``Report`` oneof case of an oracle's report kind ("olh-pool" → "olh_pool")."""
    return kind.replace("-", "_")


def _field_format(name: str, dtype: str, shape: tuple[int, ...]) -> str:
    """The struct format of one field of one report in the frame (little-endian, packed)."""
    if shape == () and dtype in _SCALAR_FORMATS:
        return _SCALAR_FORMATS[dtype]
    if dtype == "uint8" and len(shape) == 1:
        return f"{shape[0]}s"
    raise ReportError(f"report field {name!r} ({dtype}, shape {shape}) has no wire form")


def report_to_pb(reports: Reports) -> Any:
    """The ``Report`` message of a batch of exactly one report."""
    if reports.n != 1:
        raise ReportError(f"a Report message holds exactly one report, got {reports.n}")
    msg = report_pb2.Report()
    case = case_of(reports.kind)
    if case not in report_pb2.Report.DESCRIPTOR.fields_by_name:
        raise ReportError(f"the device wire has no report of kind {reports.kind!r}")
    sub = getattr(msg, case)
    sub.SetInParent()
    for name, arr in reports.arrays.items():
        _field_format(name, arr.dtype.name, arr.shape[1:])
        value = arr[0]
        setattr(sub, name, value.tobytes() if arr.ndim > 1 else int(value))
    return msg


class ReportFields:
    """The ``Report`` messages of one task's oracle over its candidates: :meth:`frame` checks
    one and returns its canonical frame (``Reports.to_bytes()`` of that one report)."""

    def __init__(self, layout: ReportLayout) -> None:
        self.layout = layout
        self.case = case_of(layout.kind)
        canon = layout.template().to_bytes()
        self.head = canon[: len(canon) - layout.nbytes]  # the frame up to the values
        self.fields: list[tuple[str, int | None, int | None]] = []  # name, limit, byte length
        formats = []
        for name, f in layout.fields.items():
            fmt = _field_format(name, f.dtype, f.shape)
            formats.append(fmt)
            self.fields.append((name, f.limit, f.shape[0] if fmt.endswith("s") else None))
        self.pack = struct.Struct("<" + "".join(formats)).pack

    def frame(self, msg: Any) -> bytes:
        """The frame of one ``Report`` message; :class:`ReportError` saying what is wrong with
        it (another oracle's case, a field missing, of the wrong length or over its limit)."""
        case = msg.WhichOneof("oracle")
        if case != self.case:
            raise ReportError(f"the task wants a {self.case} report, got {case or 'none'}")
        sub = getattr(msg, case)
        values = []
        for name, limit, size in self.fields:
            if not sub.HasField(name):
                raise ReportError(f"report field {case}.{name} is missing")
            value = getattr(sub, name)
            if size is not None and len(value) != size:
                raise ReportError(
                    f"report field {case}.{name} must be {size} bytes, got {len(value)}"
                )
            if limit is not None and value >= limit:
                raise ReportError(
                    f"report field {case}.{name} = {value} is out of range (< {limit})"
                )
            values.append(value)
        return self.head + self.pack(*values)


def report_from_pb(msg: Any, layout: ReportLayout) -> Reports:
    """The one report of a checked ``Report`` message as the oracle's :class:`Reports`."""
    return Reports.from_bytes(ReportFields(layout).frame(msg))


def reports_from_pb(msgs: list[Any], layout: ReportLayout) -> Reports:
    """Many ``Report`` messages of one layout as one :class:`Reports` batch."""
    fields = ReportFields(layout)
    rows = b"".join(fields.frame(m)[len(fields.head) :] for m in msgs)
    dtype = np.dtype(
        [(k, np.dtype(f.dtype).newbyteorder("<"), f.shape) for k, f in layout.fields.items()]
    )
    values = np.frombuffer(rows, dtype=dtype)
    arrays = {k: values[k].astype(f.dtype) for k, f in layout.fields.items()}
    return Reports(layout.kind, layout.size, arrays)
