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


class ConnectionProblem(TransportError):
    """A connection no retry can fix (code UNAVAILABLE): a certificate the CA does not trust,
    an expired one or one for other hosts, or TLS on one side only; the message says what to
    fix."""

    def __init__(self, message: str) -> None:
        super().__init__("UNAVAILABLE", message)
        self.args = (message,)  # printed as the sentence alone


class LimitError(FedHHError):
    """Input over a size or resource limit (a configured bound, a hard cap, a budget): the
    transports answer it with RESOURCE_EXHAUSTED instead of INVALID_ARGUMENT."""


class ParameterLimit(ParameterError, LimitError):
    """A run parameter over a configured bound (k, candidates, the estimated memory of a run)."""


class ProtocolLimit(ProtocolError, LimitError):
    """A protocol message over a hard size cap (array elements, reply items)."""


class BudgetExceeded(LimitError):
    """A run would take a user over the party's privacy budget (or asks more ε than one run may
    use)."""


class ImplausibleReply(ProtocolError):
    """A well-formed reply whose figures cannot be true for its party (more reports than users,
    estimates outside what the oracle can produce): refused, and the party counts as failed."""


class DeadlinePassed(FedHHError):
    """The transport's deadline for a request passed while the party was working on it."""


class StorageError(FedHHError):
    """A state file refused a write (disk full, I/O error, read-only): nothing was written, and
    the transports answer UNAVAILABLE (a retry may succeed once the disk is fixed)."""


class MissingExtra(FedHHError):
    """A command or module needs an optional dependency that is not installed: the message names
    the extra that brings it (``pip install 'fedhh[server]'``)."""
