"""Checks shared by the dataset tests (tests/test_datasets*.py)."""

from __future__ import annotations

import numpy as np

from fedhh.core import codes as cd
from fedhh.datasets import FederatedDataset


def assert_consistent(ds: FederatedDataset) -> None:
    """Parties are uint64 arrays whose concatenation has exactly the global counts."""
    assert len(ds.parties) == ds.n_parties
    ndim = 1 if ds.m <= 64 else 2  # fedhh.core.codes: (n, W) words above 64 bits
    assert all(p.dtype == np.uint64 and p.ndim == ndim and p.size > 0 for p in ds.parties)
    codes, counts = cd.unique_counts(np.concatenate(ds.parties))
    np.testing.assert_array_equal(codes, ds.global_codes)
    np.testing.assert_array_equal(counts, ds.global_counts)
    assert ds.global_codes.dtype == np.uint64
    assert ds.global_counts.dtype == np.int64
    assert ds.n_users == int(ds.party_sizes.sum()) == int(ds.global_counts.sum())
    assert ds.n_distinct == cd.count(ds.global_codes)
    if ds.m < 64:
        assert int(ds.global_codes.max()) < 1 << ds.m
