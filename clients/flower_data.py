"""A Flower SuperNode's party data, described by its node config (with the run config as fallback).

Keys (Flower style, kebab-case); the node config wins over the run config for every key:

* a party file: ``party-file`` (one item per line) with ``item-bytes`` (string items of that
  width) or ``item-bits`` (integer items); or ``party-files`` (a comma-separated list, e.g. in the
  run config of a simulation) of which the node takes entry ``partition-id``;
* a partition of a named dataset: ``dataset`` = ``zipf`` | ``aol`` with ``partition-id`` and
  ``num-partitions`` and the dataset parameters ``users``, ``items``, ``zipf-s``, ``bits``,
  ``split``, ``alpha``, ``sizes``, ``data-seed`` (zipf) or ``data-path``, ``max-users`` (aol).
  Every node generates (or loads) the whole federation from the seed and keeps partition i, so
  all nodes agree on the split, and it equals ``fedhh simulate``'s data for the same options.

``party-id`` names the party (default ``party-<partition-id>``, as ``fedhh simulate`` names
them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedhh.codec import Codes, IntCodec, StringCodec, codec_for
from fedhh.datasets import FederatedDataset, load_aol, load_party_files, synthetic_zipf
from fedhh.errors import ParameterError
from fedhh.protocol import codec_name

Config = Mapping[str, Any]

# Defaults of the named datasets: those of `fedhh simulate`.
DATASET_DEFAULTS: dict[str, Any] = {
    "dataset": "zipf",
    "users": 200_000,
    "items": 10_000,
    "zipf-s": 1.1,
    "bits": 32,
    "split": "dirichlet",
    "alpha": 0.5,
    "sizes": "equal",
    "data-seed": 0,
    "data-path": "",
    "max-users": 0,
}


@dataclass(frozen=True)
class PartyData:
    """One node's party: its id, its users' codes, the codec and where the data came from."""

    party_id: str
    codes: Codes
    codec: StringCodec | IntCodec
    order: int
    source: str  # a canonical description of a named federation ("" for party files)

    @property
    def codec_name(self) -> str:
        return codec_name(self.codec)


def _lookup(node: Config, run: Config, key: str, default: Any = None) -> Any:
    if key in node:
        return node[key]
    if key in run:
        return run[key]
    return default


def _int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ParameterError(f"config key {key!r} must be an integer, got {value!r}")
    try:
        out = int(value)
    except ValueError:
        raise ParameterError(f"config key {key!r} must be an integer, got {value!r}") from None
    if isinstance(value, float) and out != value:
        raise ParameterError(f"config key {key!r} must be an integer, got {value!r}")
    return out


def dataset_options(node: Config, run: Config) -> dict[str, Any]:
    """The named dataset's options (node config over run config over the defaults)."""
    opts = {k: _lookup(node, run, k, v) for k, v in DATASET_DEFAULTS.items()}
    parties = _lookup(node, run, "num-partitions", _lookup(node, run, "parties"))
    if parties is None:
        raise ParameterError("a named dataset needs num-partitions (or parties) in the config")
    opts["parties"] = _int(parties, "num-partitions")
    for key in ("users", "items", "bits", "data-seed", "max-users"):
        opts[key] = _int(opts[key], key)
    for key in ("zipf-s", "alpha"):
        opts[key] = float(opts[key])
    for key in ("dataset", "split", "sizes", "data-path"):
        opts[key] = str(opts[key])
    if opts["dataset"] not in ("zipf", "aol"):
        raise ParameterError(f"unknown dataset {opts['dataset']!r}; choose zipf or aol")
    if opts["dataset"] == "zipf":
        for key in ("data-path", "max-users"):
            del opts[key]
    else:
        for key in ("users", "items", "zipf-s", "bits"):
            del opts[key]
    return opts


def describe_options(opts: Mapping[str, Any]) -> str:
    """A canonical text for a named federation (equal text ⇒ equal data)."""
    return json.dumps(dict(sorted(opts.items())), separators=(",", ":"))


def load_federation(opts: Mapping[str, Any]) -> FederatedDataset:
    """The whole named federation (every party), as ``fedhh simulate`` builds it."""
    if opts["dataset"] == "aol":
        return load_aol(
            opts["data-path"] or None,
            n_parties=opts["parties"],
            split=opts["split"],
            alpha=opts["alpha"],
            sizes=opts["sizes"],
            seed=opts["data-seed"],
            max_users=opts["max-users"] or None,
        )
    return synthetic_zipf(
        opts["users"],
        opts["parties"],
        m=opts["bits"],
        n_items=opts["items"],
        s=opts["zipf-s"],
        split=opts["split"],
        alpha=opts["alpha"],
        sizes=opts["sizes"],
        seed=opts["data-seed"],
    )


_FEDERATIONS: dict[str, FederatedDataset] = {}  # per process: nodes of one Ray actor share it


def federation_for(opts: Mapping[str, Any]) -> FederatedDataset:
    key = describe_options(opts)
    ds = _FEDERATIONS.get(key)
    if ds is None:
        if len(_FEDERATIONS) >= 4:
            _FEDERATIONS.clear()
        ds = _FEDERATIONS[key] = load_federation(opts)
    return ds


def party_data(node: Config, run: Config) -> PartyData:
    """The party data a node's config describes."""
    pid_raw = _lookup(node, run, "partition-id")
    partition = _int(pid_raw, "partition-id") if pid_raw is not None else -1
    name = node.get("party-id")
    files = _party_files(node, run, partition)
    if files is not None:
        path, codec = files
        ds = load_party_files([path], codec=codec)
        party_id = str(name) if name else (f"party-{partition}" if partition >= 0 else path.stem)
        return PartyData(party_id, ds.parties[0], ds.codec, partition, "")
    opts = dataset_options(node, run)
    if not 0 <= partition < opts["parties"]:
        raise ParameterError(
            f"partition-id must be in 0..{opts['parties'] - 1} for a named dataset, got {pid_raw!r}"
        )
    ds = federation_for(opts)
    codes = np.asarray(ds.parties[partition], dtype=np.uint64)
    party_id = str(name) if name else f"party-{partition}"
    return PartyData(party_id, codes, ds.codec, partition, describe_options(opts))


def _party_files(node: Config, run: Config, partition: int) -> tuple[Path, Any] | None:
    single = node.get("party-file")
    many = _lookup(node, run, "party-files", "")
    if not single and not many:
        return None
    if single:
        path = Path(str(single))
    else:
        paths = [p.strip() for p in str(many).split(",") if p.strip()]
        if not 0 <= partition < len(paths):
            raise ParameterError(
                f"party-files lists {len(paths)} files; partition-id {partition} has none"
            )
        path = Path(paths[partition])
    nbytes = _lookup(node, run, "item-bytes", 0)
    nbits = _lookup(node, run, "item-bits", 0)
    codec = codec_for(_int(nbytes, "item-bytes") or None, _int(nbits, "item-bits") or None)
    return path, codec


__all__ = [
    "DATASET_DEFAULTS",
    "PartyData",
    "dataset_options",
    "describe_options",
    "federation_for",
    "load_federation",
    "party_data",
]
