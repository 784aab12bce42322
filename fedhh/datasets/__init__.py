"""Federated datasets: synthetic non-IID Zipf populations, the AOL query log, the baby-names
federation, user files (docs/mechanisms.md §9).

A :class:`FederatedDataset` holds one ``uint64`` code array per party (one entry per user, users
in random order), the codec that decodes codes back to items, and the exact global counts.

The package, by job:

* :mod:`~fedhh.datasets.container` — the dataset value :class:`FederatedDataset`;
* :mod:`~fedhh.datasets.splits` — party size profiles and the non-IID split rules ("iid",
  "dirichlet", "permutation"; their exact definitions are in that module's docstring) and
  :func:`partition` of a fixed population;
* :mod:`~fedhh.datasets.synthetic` — :func:`synthetic_zipf` and its Zipf helpers;
* :mod:`~fedhh.datasets.aol` — the AOL query log and ``value<TAB>count`` files;
* :mod:`~fedhh.datasets.babynames` — the Israeli baby-names federation (sector × sex parties);
* :mod:`~fedhh.datasets.files` — one file (or CSV column) per party, and writing them;
* :mod:`~fedhh.datasets.urls` — :func:`synthetic_urls`, long text items (URLs of 20–32 bytes);
* :mod:`~fedhh.datasets.common` — the seeded RNG, argument checks, finding the shared data files.

All randomness comes from a ``numpy.random.Generator`` passed as ``rng`` (or an int seed, as
``rng`` or ``seed``); ``None`` draws fresh OS entropy (not reproducible). No global RNG.
"""

from __future__ import annotations

from fedhh.datasets.aol import AOL_WIDTH, load_aol, read_value_counts
from fedhh.datasets.babynames import BABYNAMES_FILE, load_babynames
from fedhh.datasets.common import AOL_FILE, find_data_file, make_rng
from fedhh.datasets.container import FederatedDataset
from fedhh.datasets.files import load_csv_column, load_party_files, write_party_files
from fedhh.datasets.splits import SPLITS, apportion, partition, size_weights
from fedhh.datasets.synthetic import synthetic_zipf, zipf_labels, zipf_pmf
from fedhh.datasets.urls import synthetic_urls

__all__ = [
    "AOL_FILE",
    "AOL_WIDTH",
    "BABYNAMES_FILE",
    "SPLITS",
    "FederatedDataset",
    "apportion",
    "find_data_file",
    "load_aol",
    "load_babynames",
    "load_csv_column",
    "load_party_files",
    "make_rng",
    "partition",
    "read_value_counts",
    "size_weights",
    "synthetic_urls",
    "synthetic_zipf",
    "write_party_files",
    "zipf_labels",
    "zipf_pmf",
]
