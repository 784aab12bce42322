"""The dataset value: users' item codes split over parties, with the exact global counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedhh.codec import Codes, IntCodec, StringCodec, as_codes, check_bits
from fedhh.datasets.common import RngLike, make_rng
from fedhh.errors import CodecError, DataError, ParameterError
from fedhh.metrics import (
    Scores,
    evaluate,
    known_domain_reference,
    mean_scores,
    reference_oracle,
    true_top_k,
)

__all__ = ["FederatedDataset"]

_TRUNCATION = ("names", "truncated_names", "truncated_users")  # shown by truncation_note()


def _count(value: object) -> int:
    """An integer parameter (0 when absent or not an integer)."""
    return int(value) if isinstance(value, (int, np.integer)) else 0


@dataclass(frozen=True, eq=False)
class FederatedDataset:
    """Users' item codes split over parties, with the exact global counts.

    ``parties[i]`` is a read-only ``uint64`` array with one m-bit code per user of party i.
    ``global_codes`` (sorted, unique) and ``global_counts`` (int64, aligned, all ≥ 1) are the
    exact counts over all parties, computed once at construction (or passed in as
    ``precomputed=(codes, counts)`` by the generators, which know them already; checked only
    cheaply: sorted, unique, aligned, summing to the number of users). ``party_names`` optionally
    names the parties (real federations); ``params`` records how the data was made.
    """

    name: str
    m: int
    parties: list[Codes] = field(repr=False)
    codec: StringCodec | IntCodec
    params: Mapping[str, object] = field(default_factory=dict)
    precomputed: InitVar[tuple[ArrayLike, ArrayLike] | None] = None
    party_names: Sequence[str] = ()
    global_codes: Codes = field(init=False, repr=False)
    global_counts: NDArray[np.int64] = field(init=False, repr=False)

    def __post_init__(self, precomputed: tuple[ArrayLike, ArrayLike] | None) -> None:
        m = check_bits(self.m)
        if int(self.codec.m) != m:
            raise ParameterError(f"codec has m={self.codec.m} bits but the dataset has m={m}")
        if isinstance(self.parties, np.ndarray) or not isinstance(self.parties, Sequence):
            raise ParameterError("parties must be a list of code arrays, one per party")
        if len(self.parties) < 1:
            raise ParameterError("a dataset needs at least one party")
        parties: list[Codes] = []
        for i, p in enumerate(self.parties):
            try:
                arr = as_codes(p, m).view()
            except CodecError as exc:
                raise DataError(f"party {i}: {exc}") from None
            if arr.size == 0:
                raise DataError(f"party {i} has no users")
            arr.flags.writeable = False
            parties.append(arr)
        object.__setattr__(self, "m", m)
        object.__setattr__(self, "parties", parties)
        object.__setattr__(self, "params", dict(self.params))
        names = tuple(str(x) for x in self.party_names)
        if names and len(names) != len(parties):
            raise ParameterError(f"{len(names)} party names for {len(parties)} parties")
        object.__setattr__(self, "party_names", names)
        n = sum(p.size for p in parties)
        if precomputed is None:
            codes, counts = np.unique(np.concatenate(parties), return_counts=True)
        else:
            codes = as_codes(precomputed[0], m)
            counts = np.asarray(precomputed[1])
            if (
                counts.shape != codes.shape
                or (codes.size > 1 and not np.all(codes[1:] > codes[:-1]))
                or (counts.size and int(counts.min()) < 1)
                or int(counts.sum()) != n
            ):
                raise DataError("precomputed global counts do not match the parties")
        codes = np.ascontiguousarray(codes, dtype=np.uint64)
        counts = np.ascontiguousarray(counts, dtype=np.int64)
        codes.flags.writeable = False
        counts.flags.writeable = False
        object.__setattr__(self, "global_codes", codes)
        object.__setattr__(self, "global_counts", counts)

    @property
    def n_parties(self) -> int:
        return len(self.parties)

    @property
    def party_sizes(self) -> NDArray[np.int64]:
        """Number of users of each party."""
        return np.array([p.size for p in self.parties], dtype=np.int64)

    @property
    def n_users(self) -> int:
        return int(sum(p.size for p in self.parties))

    @property
    def n_distinct(self) -> int:
        """Number of distinct items held by at least one user."""
        return int(self.global_codes.size)

    def top_k(self, k: int) -> Codes:
        """The true global top-k codes, most frequent first (ties: smaller code first)."""
        return true_top_k((self.global_codes, self.global_counts), k)

    def count_of(self, codes: ArrayLike) -> NDArray[np.int64]:
        """Exact global counts of ``codes`` (0 for codes nobody holds)."""
        q = as_codes(codes, self.m)
        out = np.zeros(q.size, dtype=np.int64)
        if self.global_codes.size == 0 or q.size == 0:
            return out
        pos = np.minimum(np.searchsorted(self.global_codes, q), self.global_codes.size - 1)
        hit = self.global_codes[pos] == q
        out[hit] = self.global_counts[pos[hit]]
        return out

    def party_counts(self, i: int) -> tuple[Codes, NDArray[np.int64]]:
        """Exact counts (sorted unique codes, counts) of party ``i``."""
        codes, counts = np.unique(self.parties[i], return_counts=True)
        return codes, counts.astype(np.int64)

    def decode(self, codes: ArrayLike) -> list[Any]:
        """Codes back to items with the dataset's codec."""
        return list(self.codec.decode(codes))

    def evaluate(self, returned: ArrayLike, estimates: ArrayLike | None, k: int) -> Scores:
        """All §8 metrics of a returned set (see :func:`fedhh.metrics.evaluate`)."""
        return evaluate(returned, estimates, self.global_codes, self.global_counts, k)

    def reference(
        self, epsilon: float, k: int, rng: RngLike = None, *, repeats: int = 20
    ) -> dict[str, Any]:
        """The known-domain reference (docs/mechanisms.md §8) of this dataset at ε and k.

        The scores an analyst would get if the item domain (all distinct items) were known and
        all N users answered one round of the best oracle over it
        (:func:`fedhh.metrics.known_domain_reference`: exact marginals, items drawn
        independently), averaged over ``repeats`` draws: ``f1``, ``f1_std``, ``ncr``, ``ncr_std``,
        ... (:func:`fedhh.metrics.mean_scores`), plus ``oracle`` and ``draws``.
        """
        draws = known_domain_reference(
            self.global_codes, self.global_counts, epsilon, k, make_rng(rng), repeats=repeats
        )
        out: dict[str, Any] = {
            "oracle": reference_oracle(epsilon, self.n_distinct).describe(),
            "domain": self.n_distinct,
            "draws": len(draws),
        }
        means = mean_scores(draws)
        for key in ("f1", "ncr", "precision", "recall", "are"):
            out[key], out[f"{key}_std"] = means[key], means[f"{key}_std"]
        return out

    def truncation_note(self) -> str:
        """One line on the items cut to the item width ("" if the loader cut none or says
        nothing): how many distinct items and how many users were affected."""
        p = self.params
        names, cut, users = (_count(p.get(key)) for key in _TRUNCATION)
        if not cut:
            return ""
        return (
            f"truncated to {_count(p.get('item_bytes')) or self.m // 8} bytes: {cut:,} of "
            f"{names:,} distinct names ({users:,} of {self.n_users:,} users); "
            f"{self.n_distinct:,} distinct items remain"
        )

    def summary(self) -> dict[str, Any]:
        """The dataset block of the result document (JSON-serialisable): name, users, parties and
        their sizes (and names), distinct items, m, how it was made, truncation counts."""
        out: dict[str, Any] = {
            "name": self.name,
            "users": self.n_users,
            "parties": self.n_parties,
            "party_sizes": self.party_sizes.tolist(),
        }
        if self.party_names:
            out["party_names"] = list(self.party_names)
        out["distinct_items"] = self.n_distinct
        out["m"] = self.m
        out["params"] = {
            k: (v if isinstance(v, (str, int, float, bool)) or v is None else str(v))
            for k, v in self.params.items()
        }
        return out

    def describe(self, top: int = 5) -> str:
        """A short human-readable summary: sizes, distinct items, parameters, top items."""
        sizes = self.party_sizes
        lines = [
            f"{self.name}: {self.n_users:,} users in {self.n_parties} parties "
            f"(sizes {int(sizes.min()):,}..{int(sizes.max()):,}), m={self.m} bits, "
            f"{self.n_distinct:,} distinct items"
        ]
        shown = {k: v for k, v in self.params.items() if k not in _TRUNCATION}
        if shown:
            lines.append("  " + ", ".join(f"{k}={v}" for k, v in shown.items()))
        if self.party_names:
            line = "  parties:"
            for n, s in zip(self.party_names, sizes, strict=True):  # ≤ 100 characters a line
                entry = f" {n} {int(s):,},"
                if len(line) + len(entry) > 100:
                    lines.append(line)
                    line = "   "
                line += entry
            lines.append(line.rstrip(","))
        note = self.truncation_note()
        if note:
            lines.append("  " + note)
        if top > 0 and self.n_distinct:
            codes = self.top_k(top)
            items = self.decode(codes)
            counts = self.count_of(codes)
            lines.append(
                "  top: "
                + ", ".join(f"{it!r} ({int(c):,})" for it, c in zip(items, counts, strict=True))
            )
        return "\n".join(lines)
