"""The frequency-oracle contract shared by GRR, OUE and OLH, and the report/support containers.

A frequency oracle (FO) is an immutable value object built from ε. Users perturb their values
into reports (vectorised over a batch of users); the server aggregates reports into *support
counts* C(v) over a candidate set and debiases them:

    ĉ(v) = (C(v) − n·q) / (p − q),    Var[ĉ(v)] = (c·p(1−p) + (n−c)·q(1−q)) / (p − q)²,

where p = P[a report supports v | the user holds v], q = P[... | the user holds another value],
n is the number of reports and c the true count of v. ``variance(n, d)`` is the dominant term
n·q(1−q)/(p−q)² (c = 0), as in Wang et al., USENIX Security 2017.

Support counts are the mergeable server state: the support of two batches over the same candidate
set adds up to the support of their union, so a party can aggregate its users in shards.

Besides perturbing and decoding, an oracle declares what every other layer needs to know about it,
so that none of them switches on its name: whether its users need the candidate set
(``needs_candidates``), the public parameters a device's report task carries (``parameters``),
the layout of one report with the limits of its values (``report_layout``: what a party's ingest
checks a device's report against), the bytes of one report (``report_bytes``) and the work of one
decode (``decode_evaluations``: the coordinator's bounds of a reply's level costs), the variance
of a debiased count (``variance``, vectorised over the counts) and the exact probability of each
report given the user's value (``output_probability``, the one signature the ε-LDP audit every
oracle's tests inherit checks).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedhh.core.framing import ArrayWriter, pack, read_array, unpack
from fedhh.core.variation import VariationRatio
from fedhh.errors import ParameterError, ReportError

Codes = NDArray[np.uint64]

_MAGIC = b"FHHR"
_VERSION = 2
_ALLOWED_DTYPES = frozenset({"uint8", "uint32", "uint64"})


MIN_EPSILON = 0.01  # below it a count's standard error is over 200·√n: no estimate, and at
# ε ≈ 1e-10 the oracles' (p − q)² rounds to 0 (their variance divides by it)


def check_epsilon(epsilon: float) -> float:
    """Validate a privacy budget: a finite float in [MIN_EPSILON, 40]."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float, np.integer, np.floating)):
        raise ParameterError(f"epsilon must be a number, got {epsilon!r}")
    eps = float(epsilon)
    if math.isnan(eps) or math.isinf(eps) or eps <= 0:
        raise ParameterError(f"epsilon must be a finite number > 0, got {epsilon!r}")
    if eps < MIN_EPSILON:
        raise ParameterError(
            f"epsilon must be at least {MIN_EPSILON:g} (below it a count's standard error is "
            f"over 200·√n: nothing can be estimated), got {eps:g}"
        )
    if eps > 40:
        raise ParameterError(f"epsilon must be at most 40 (e^ε overflows the oracles), got {eps}")
    return eps


def as_count(true_count: float | NDArray[np.float64]) -> float | NDArray[np.float64]:
    """A true count as the variance formulas take it: an array as it is, a number as a float."""
    return true_count if isinstance(true_count, np.ndarray) else float(true_count)


def check_count(name: str, value: int, minimum: int = 0) -> int:
    """Validate a non-negative integer parameter (a count or a size)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ParameterError(f"{name} must be an integer, got {value!r}")
    if int(value) < minimum:
        raise ParameterError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def as_candidates(candidates: ArrayLike | None) -> Codes:
    """Validate a candidate set: a non-empty 1-D array of distinct non-negative integer codes."""
    if candidates is None:
        raise ParameterError("this oracle needs a candidate set (candidates=None given)")
    arr = np.asarray(candidates)
    if arr.ndim != 1:
        raise ParameterError(f"candidates must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise ParameterError("the candidate set is empty")
    if arr.dtype.kind == "i":
        if (arr < 0).any():
            raise ParameterError(f"candidates must be non-negative, got {int(arr.min())}")
    elif arr.dtype.kind != "u":
        raise ParameterError(f"candidates must be integer codes, got dtype {arr.dtype}")
    arr = arr.astype(np.uint64, copy=False)
    srt = np.sort(arr)
    dup = np.flatnonzero(srt[1:] == srt[:-1])
    if dup.size:
        raise ParameterError(f"candidates must be distinct, {int(srt[dup[0]])} appears twice")
    return arr


def as_values(values: ArrayLike) -> Codes:
    """Validate the users' values: a 1-D array of non-negative integer codes (may be empty)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ParameterError(f"values must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if arr.dtype.kind == "i":
        if (arr < 0).any():
            raise ParameterError(f"values must be non-negative, got {int(arr.min())}")
    elif arr.dtype.kind != "u":
        raise ParameterError(f"values must be integer codes, got dtype {arr.dtype}")
    return arr.astype(np.uint64, copy=False)


def candidate_index(values: Codes, candidates: Codes) -> NDArray[np.int64]:
    """Position of each value in ``candidates``, or ``len(candidates)`` (the ⊥ symbol) if absent."""
    order = np.argsort(candidates, kind="stable")
    srt = candidates[order]
    pos = np.searchsorted(srt, values)
    pos_c = np.minimum(pos, srt.size - 1)
    found = srt[pos_c] == values
    return np.where(found, order[pos_c], candidates.size).astype(np.int64)


def value_symbols(values: ArrayLike, candidates: ArrayLike | None) -> tuple[int, NDArray[np.int64]]:
    """For the oracles over C ∪ {⊥} (GRR, OUE): the domain size d = |C| + 1 and each value's
    symbol (:func:`candidate_index`), both arguments checked."""
    cand = as_candidates(candidates)
    return cand.size + 1, candidate_index(as_values(values), cand)


@dataclass(frozen=True, eq=False)
class Reports:
    """A batch of ε-LDP reports of one oracle kind, as named arrays whose first axis is the user.

    ``kind`` names the oracle ("grr", "oue", "olh", "olh-pool"); ``size`` is the oracle's output
    domain (GRR/OUE: d = |C| + 1 including ⊥; OLH: g). Reports are plain arrays, serialise with
    :meth:`to_bytes` / :meth:`from_bytes` (no pickle) and concatenate with :meth:`concat`.
    """

    kind: str
    size: int
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        lengths = {a.shape[0] for a in self.arrays.values()}
        if len(lengths) > 1:
            raise ReportError(f"report arrays of different lengths: {sorted(lengths)}")

    @property
    def n(self) -> int:
        """Number of reports (users) in the batch."""
        for a in self.arrays.values():
            return int(a.shape[0])
        return 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def take(self, idx: NDArray[np.integer] | NDArray[np.bool_] | slice) -> Reports:
        """The sub-batch of the given users (an index array or a boolean mask)."""
        return Reports(self.kind, self.size, {k: v[idx] for k, v in self.arrays.items()})

    def concat(self, other: Reports) -> Reports:
        """The batch of both: reports of the same oracle kind and size, self's users first."""
        if (self.kind, self.size) != (other.kind, other.size):
            raise ReportError(
                f"cannot concatenate {self.kind} reports of size {self.size} with "
                f"{other.kind} reports of size {other.size}"
            )
        if set(self.arrays) != set(other.arrays):
            raise ReportError("cannot concatenate report batches with different fields")
        return Reports(
            self.kind,
            self.size,
            {k: np.concatenate([v, other.arrays[k]]) for k, v in self.arrays.items()},
        )

    def nbytes(self) -> int:
        """Payload size in bytes (what the reports cost on the wire, without the header)."""
        return int(sum(a.nbytes for a in self.arrays.values()))

    def to_bytes(self) -> bytes:
        """Serialise (see :mod:`fedhh.core.framing`): a JSON header (kind, size, fields) and the raw
        little-endian arrays."""
        writer = ArrayWriter(_ALLOWED_DTYPES, ReportError)
        fields = {k: writer.add(v) for k, v in self.arrays.items()}
        return pack(
            _MAGIC, _VERSION, {"kind": self.kind, "size": self.size, "fields": fields}, writer
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Reports:
        """Inverse of :meth:`to_bytes`; malformed input raises :class:`ReportError`."""
        header, body = unpack(data, _MAGIC, _VERSION, "report batch", ReportError)
        try:
            kind, size, fields = str(header["kind"]), int(header["size"]), dict(header["fields"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ReportError(f"malformed report header: {exc}") from None
        arrays = {
            str(name): read_array(body, ref, _ALLOWED_DTYPES, ReportError)
            for name, ref in fields.items()
        }
        used = sum(a.nbytes for a in arrays.values())
        if used != len(body):
            raise ReportError(f"report batch has {len(body) - used} unaccounted bytes")
        return cls(kind, size, arrays)


@dataclass(frozen=True, eq=False)
class Support:
    """Mergeable server state: ``n`` reports and their support counts C(v) per candidate."""

    n: int
    counts: NDArray[np.int64]

    def __add__(self, other: Support) -> Support:
        if self.counts.shape != other.counts.shape:
            raise ReportError(
                f"cannot merge support over {self.counts.size} candidates with support over "
                f"{other.counts.size} candidates"
            )
        return Support(self.n + other.n, self.counts + other.counts)

    @classmethod
    def zeros(cls, n_candidates: int) -> Support:
        return cls(0, np.zeros(n_candidates, dtype=np.int64))


_TALLY_MAGIC = b"FHHT"
_TALLY_DTYPES = frozenset({"int64"})


@dataclass(frozen=True, eq=False)
class Tally:
    """A group's reports folded into the oracle's mergeable state over the candidates they are
    decoded against (:meth:`FrequencyOracle.tally`): for most oracles their support counts per
    candidate, for the seed pool its S×g count matrix (decoded once, at the end). The state of
    two batches adds up to the state of their union, so folding reports block by block as they
    arrive gives exactly what all of them give at once; ``nbytes`` is their payload (what they
    cost on the wire). What a party keeps of reports that arrive over time instead of the
    reports, so its memory and the close of a level do not grow with its users."""

    n: int
    state: NDArray[np.int64]
    nbytes: int

    def __add__(self, other: Tally) -> Tally:
        if self.state.shape != other.state.shape:
            raise ReportError(
                f"cannot merge tallies of shapes {self.state.shape} and {other.state.shape}"
            )
        return Tally(self.n + other.n, self.state + other.state, self.nbytes + other.nbytes)

    def to_bytes(self) -> bytes:
        writer = ArrayWriter(_TALLY_DTYPES, ReportError)
        header = {"n": self.n, "nbytes": self.nbytes, "state": writer.add(self.state)}
        return pack(_TALLY_MAGIC, 1, header, writer)

    @classmethod
    def from_bytes(cls, data: bytes) -> Tally:
        """Inverse of :meth:`to_bytes`; malformed input raises :class:`ReportError`."""
        header, body = unpack(data, _TALLY_MAGIC, 1, "tally", ReportError)
        try:
            n, nbytes = int(header["n"]), int(header["nbytes"])
            state = read_array(body, header["state"], _TALLY_DTYPES, ReportError)
        except (ValueError, KeyError, TypeError) as exc:
            raise ReportError(f"malformed tally: {exc}") from None
        return cls(n, state, nbytes)


@dataclass(frozen=True)
class ReportField:
    """One named array of a report: its dtype, its shape per report and, where the oracle bounds
    its values, the limit every value stays below (None: any value of the dtype is a report)."""

    dtype: str
    shape: tuple[int, ...] = ()
    limit: int | None = None


@dataclass(frozen=True, eq=False)
class ReportLayout:
    """What every report of an oracle over a given candidate set looks like: the kind and size
    of its :class:`Reports` and its fields, in the order ``perturb`` writes them."""

    kind: str
    size: int
    fields: Mapping[str, ReportField]

    @property
    def nbytes(self) -> int:
        """Bytes of one report (its arrays' payload, as :meth:`Reports.nbytes` counts them)."""
        return sum(np.dtype(f.dtype).itemsize * math.prod(f.shape) for f in self.fields.values())

    @property
    def limits(self) -> dict[str, int]:
        """The bounded fields and their limits (every value < limit)."""
        return {k: f.limit for k, f in self.fields.items() if f.limit is not None}

    def template(self, n: int = 1) -> Reports:
        """``n`` reports of this layout with every value zero (the fixed part of a report)."""
        return Reports(
            self.kind,
            self.size,
            {k: np.zeros((n, *f.shape), dtype=f.dtype) for k, f in self.fields.items()},
        )


class FrequencyOracle(ABC):
    """The contract every ε-LDP frequency oracle implements (see the module docstring).

    A new oracle is a frozen dataclass subclass in its own module, one line of the registry
    (:data:`fedhh.oracles.ORACLES`) and one subclass of the contract tests
    (tests/oracle_contract.py); docs/architecture.md lists what else it may touch.
    """

    name: ClassVar[str]
    needs_candidates: ClassVar[bool] = True
    """Whether a user's report depends on the candidate set (then a report task carries it)."""
    parameter_names: ClassVar[tuple[str, ...]] = ()
    """The public integer parameters besides ε that rebuild the oracle (see :meth:`parameters`)."""
    epsilon: float

    def __post_init__(self) -> None:
        """Every oracle (a frozen dataclass) holds a checked ε."""
        object.__setattr__(self, "epsilon", check_epsilon(self.epsilon))

    # --- probabilities and variance -------------------------------------------------------
    @abstractmethod
    def probabilities(self, domain_size: int) -> tuple[float, float]:
        """(p, q) for a prefix domain of ``domain_size`` symbols (|C| + 1, including ⊥)."""

    @overload
    def variance(self, n: int, domain_size: int, true_count: float = 0.0) -> float: ...
    @overload
    def variance(
        self, n: int, domain_size: int, true_count: NDArray[np.float64]
    ) -> NDArray[np.float64]: ...
    def variance(
        self, n: int, domain_size: int, true_count: float | NDArray[np.float64] = 0.0
    ) -> float | NDArray[np.float64]:
        """Variance of one debiased count: (c·p(1−p) + (n−c)·q(1−q)) / (p−q)², for one true
        count c (a float) or for an array of them (elementwise, the same arithmetic).

        With ``true_count`` c = 0 this is the dominant term Var* = n·q(1−q)/(p−q)²
        (docs/mechanisms.md §2).
        """
        p, q = self.probabilities(domain_size)
        c = as_count(true_count)
        return (c * p * (1 - p) + (n - c) * q * (1 - q)) / (p - q) ** 2

    # --- what every layer asks (docs/architecture.md) -------------------------------------
    def parameters(self) -> dict[str, int]:
        """The public parameters besides ε, by name (``parameter_names``): what a report task
        carries to a device, so that ``make_oracle(name, ε, **parameters())`` equals this
        oracle."""
        return {k: int(getattr(self, k)) for k in self.parameter_names}

    @abstractmethod
    def report_layout(self, n_candidates: int) -> ReportLayout:
        """The layout of one report over ``n_candidates`` candidates: its fields, their dtypes
        and shapes, and the limits of their values (what ingest checks a device's report for)."""

    def report_bytes(self, n_candidates: int) -> int:
        """Bytes of one report over ``n_candidates`` candidates (the level's report bytes over
        its reports; the party's memory bound)."""
        return self.report_layout(n_candidates).nbytes

    @abstractmethod
    def output_probability(
        self, reports: Reports, values: ArrayLike, candidates: ArrayLike | None = None
    ) -> NDArray[np.float64]:
        """The exact probability that a user holding ``values[i]`` sends ``reports[j]`` (as
        ``perturb(values, rng, candidates)`` samples it), as an array of shape
        (len(values), reports.n). ε-LDP is: for every report, the ratio of any two rows' entries
        is at most e^ε (tests/oracle_contract.py audits it for every oracle)."""

    # --- user side ------------------------------------------------------------------------
    @abstractmethod
    def perturb(
        self, values: ArrayLike, rng: np.random.Generator, candidates: ArrayLike | None = None
    ) -> Reports:
        """One ε-LDP report per user for a batch of users holding ``values``."""

    # --- server side ----------------------------------------------------------------------
    def decode_evaluations(self, n_reports: int, n_candidates: int) -> int:
        """Elementary steps of one decode (``support``) of ``n_reports`` reports over
        ``n_candidates`` candidates, for a planner choosing the cheaper oracle of a level.

        Here (GRR) n + |C|: each report's symbol is counted once, each candidate read once.
        OUE sums n·(|C| + 1) report bits; the OLH family counts hash evaluations: n·|C| for
        plain OLH, S·|C| for the seed pool (whose O(n) sketch is not counted).
        """
        return int(n_reports) + int(n_candidates)

    @abstractmethod
    def support(self, reports: Reports, candidates: ArrayLike) -> Support:
        """Support counts of ``reports`` over ``candidates`` (mergeable by ``+``)."""

    def debias(self, support: Support) -> NDArray[np.float64]:
        """Unbiased counts from support counts: (C − n·q) / (p − q)."""
        p, q = self.probabilities(support.counts.size + 1)
        return (support.counts.astype(np.float64) - support.n * q) / (p - q)

    def tally(self, reports: Reports, candidates: ArrayLike) -> Tally:
        """``reports`` folded over ``candidates`` (mergeable by ``+``): here their support."""
        return Tally(reports.n, self.support(reports, candidates).counts, reports.nbytes())

    def tally_support(self, tally: Tally, candidates: ArrayLike) -> Support:
        """The support over ``candidates`` of the reports a :meth:`tally` folded."""
        n_cand = int(np.asarray(candidates).shape[0])
        if tally.state.shape != (n_cand,):
            why = f"a tally of shape {tally.state.shape} is not over {n_cand} candidates"
            raise ReportError(why)
        return Support(tally.n, tally.state)

    def estimate(self, reports: Reports, candidates: ArrayLike) -> NDArray[np.float64]:
        """Unbiased count estimates for ``candidates`` (only the candidates are scored)."""
        return self.debias(self.support(reports, candidates))

    def check_reports(self, reports: Reports, domain_size: int | None = None) -> None:
        """Raise :class:`ReportError` if ``reports`` were not made by an oracle of this kind."""
        if reports.kind != self.name:
            raise ReportError(f"{self.name} oracle got {reports.kind} reports")
        if domain_size is not None and reports.size != domain_size:
            raise ReportError(
                f"{self.name} reports are over a domain of {reports.size} symbols, "
                f"but the candidate set gives {domain_size} (|C| + 1)"
            )

    def variation_ratio(self, domain_size: int) -> VariationRatio | None:
        """The oracle's variation-ratio profile over ``domain_size`` symbols, for the
        variation-ratio shuffling bound (fedhh.core.variation, docs/privacy.md): p and q its
        ratio bounds, β the total variation between the reports of any two inputs, the
        blanket the probability that any user's report is a sample of the common part of two
        inputs' reports. ``None`` (here) claims nothing: the run's central guarantee then
        rests on the generic bound alone."""
        return None

    def describe(self) -> str:
        return f"{self.name}(ε={self.epsilon:g})"
