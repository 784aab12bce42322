"""Typed errors of fedhh. Every error the library raises on bad input derives from FedHHError."""

from __future__ import annotations


class FedHHError(Exception):
    """Base class of every error raised by fedhh."""


class ParameterError(FedHHError, ValueError):
    """A parameter is out of range or of the wrong kind (ε ≤ 0, k < 1, m > 64, ...)."""


class CodecError(FedHHError, ValueError):
    """An item cannot be encoded or decoded with the given codec."""


class DataError(FedHHError, ValueError):
    """Input data (a dataset file, a party's items, a report batch) is missing or malformed."""


class ReportError(FedHHError, ValueError):
    """A report batch does not match the oracle or candidate set it is used with."""


class DuplicateReportError(FedHHError):
    """A user tried to report a second time in the same run."""


class ProtocolError(FedHHError):
    """A protocol message arrived out of order, for an unknown request, or with bad content."""


class RunFailed(ProtocolError):
    """A run ended without a result (every party failed, or one did under the "fail" policy);
    every transport raises this one type."""


class TransportError(FedHHError):
    """A remote call failed (gRPC): ``code`` is the status name, the message the server's."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
