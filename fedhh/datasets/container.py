"""The dataset value: users' item codes split over parties, with the exact global counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedhh.core import codes as cd
from fedhh.core.items import Codes, IntCodec, StringCodec, as_codes, check_bits
from fedhh.core.metrics import (
    Scores,
    evaluate,
    known_domain_reference,
    mean_scores,
    reference_oracle,
    true_top_k,
)
from fedhh.datasets.common import RngLike, make_rng
from fedhh.errors import CodecError, DataError, ParameterError

__all__ = ["FederatedDataset"]

# shown by truncation_note(), not among the parameters
_TRUNCATION = ("names", "truncated_names", "truncated_items", "truncated_users")


def _count(value: object) -> int:
    """An integer parameter (0 when absent or not an integer)."""
    return int(value) if isinstance(value, (int, np.integer)) else 0


@dataclass(frozen=True, eq=False)
class FederatedDataset:
    """Users' item codes split over parties, with the exact global counts.

    ``parties[i]`` is a read-only ``uint64`` array with one m-bit code per user of party i
    (:mod:`fedhh.core.codes`: 1-D up to 64 bits, ``(n, W)`` words above).
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
            if cd.count(arr) == 0:
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
        n = sum(cd.count(p) for p in parties)
        if precomputed is None:
            codes, counts = cd.unique_counts(np.concatenate(parties))
        else:
            codes = as_codes(precomputed[0], m)
            counts = np.asarray(precomputed[1])
            if (
                counts.shape != (cd.count(codes),)
                or not cd.strictly_increasing(codes)
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
        return np.array([cd.count(p) for p in self.parties], dtype=np.int64)

    @property
    def n_users(self) -> int:
        return int(sum(cd.count(p) for p in self.parties))

    @property
    def n_distinct(self) -> int:
        """Number of distinct items held by at least one user."""
        return cd.count(self.global_codes)

    def top_k(self, k: int) -> Codes:
        """The true global top-k codes, most frequent first (ties: smaller code first)."""
        return true_top_k((self.global_codes, self.global_counts), k)

    def count_of(self, codes: ArrayLike) -> NDArray[np.int64]:
        """Exact global counts of ``codes`` (0 for codes nobody holds)."""
        q = as_codes(codes, self.m)
        out = np.zeros(cd.count(q), dtype=np.int64)
        if self.n_distinct == 0 or out.size == 0:
            return out
        idx = cd.index_of(q, self.global_codes)
        hit = idx < self.n_distinct
        out[hit] = self.global_counts[idx[hit]]
        return out

    def party_counts(self, i: int) -> tuple[Codes, NDArray[np.int64]]:
        """Exact counts (sorted unique codes, counts) of party ``i``."""
        codes, counts = cd.unique_counts(self.parties[i])
        return codes, counts.astype(np.int64)

    def decode(self, codes: ArrayLike) -> list[Any]:
        """Codes back to items with the dataset's codec."""
        return list(self.codec.decode(codes))

    def evaluate(self, returned: ArrayLike, estimates: ArrayLike | None, k: int) -> Scores:
        """All §8 metrics of a returned set (see :func:`fedhh.core.metrics.evaluate`)."""
        return evaluate(returned, estimates, self.global_codes, self.global_counts, k)

    def reference(
        self,
        epsilon: float,
        k: int,
        rng: RngLike = None,
        *,
        repeats: int = 20,
        answer_alpha: float = 0.0,
    ) -> dict[str, Any]:
        """The known-domain reference (docs/mechanisms.md §8) of this dataset at ε and k.

        The scores an analyst would get if the item domain (all distinct items) were known and
        all N users answered one round of the best oracle over it
        (:func:`fedhh.core.metrics.known_domain_reference`: exact marginals, items drawn
        independently), averaged over ``repeats`` draws: ``f1``, ``f1_std``, ``ncr``, ``ncr_std``,
        ... (:func:`fedhh.core.metrics.mean_scores`), plus ``oracle``, ``draws`` and
        ``answer_alpha``: the answer cut at the noise bar of that α as a mechanism's (0: top-k).
        """
        draws = known_domain_reference(
            self.global_codes,
            self.global_counts,
            epsilon,
            k,
            make_rng(rng),
            repeats=repeats,
            answer_alpha=answer_alpha,
        )
        out: dict[str, Any] = {
            "oracle": reference_oracle(epsilon, self.n_distinct).describe(),
            "domain": self.n_distinct,
            "draws": len(draws),
            "answer_alpha": float(answer_alpha),
        }
        means = mean_scores(draws)
        for key in ("f1", "ncr", "precision", "recall", "are"):
            out[key], out[f"{key}_std"] = means[key], means[f"{key}_std"]
        return out

    def truncation(self) -> dict[str, int] | None:
        """What a truncating load cut: ``item_bytes``, ``distinct`` items and ``users`` (None
        when the items were not truncated, i.e. every item is whole)."""
        p = self.params
        if "truncated_users" not in p:
            return None
        distinct = _count(p.get("truncated_names", p.get("truncated_items")))
        return {
            "item_bytes": _count(p.get("item_bytes")) or self.m // 8,
            "distinct": distinct,
            "users": _count(p.get("truncated_users")),
        }

    def truncation_note(self) -> str:
        """One line on the items cut to the item width ("" if none was cut): how many distinct
        items and how many users were affected."""
        cut = self.truncation()
        if not cut or not cut["distinct"]:
            return ""
        names = _count(self.params.get("names"))
        what = (
            f"{cut['distinct']:,} of {names:,} distinct names"
            if names
            else (f"{cut['distinct']:,} distinct items")
        )
        return (
            f"truncated to {cut['item_bytes']} bytes: {what} ({cut['users']:,} of "
            f"{self.n_users:,} users); {self.n_distinct:,} distinct items remain"
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
        cut = self.truncation()
        if cut is not None:
            out["truncated"] = cut
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
