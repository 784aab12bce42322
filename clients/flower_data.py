"""A Flower SuperNode's party data, described by its node config (the run config fills in what
the node config does not set; docs/flower.md).

* a party file: ``party-file`` (one item per line) with ``item-bytes`` (string items of that
  width) or ``item-bits`` (integer items); or ``party-files`` (a comma-separated list, e.g. in the
  run config of a simulation) of which the node takes entry ``partition-id``;
* a partition of a named federation: the keys of :class:`~fedhh.run.settings.DatasetParams`
  (``dataset``, ``users``, ``split``, ...), ``partition-id`` and ``num-partitions`` (or
  ``parties``). Every node builds the whole federation from its seed and keeps partition i, so
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

from fedhh.core.items import Codes
from fedhh.datasets import FederatedDataset
from fedhh.errors import ParameterError
from fedhh.protocol import codec_name
from fedhh.run import settings
from fedhh.wire.v1 import protocol_pb2

Config = Mapping[str, Any]


@dataclass(frozen=True)
class PartyData:
    """One node's party: its users' codes and what it tells the ServerApp (a PartyInfo)."""

    codes: Codes
    info: protocol_pb2.PartyInfo


_FEDERATIONS: dict[str, FederatedDataset] = {}  # per process: nodes of one Ray actor share it


def _int(value: Any, key: str) -> int:
    if settings.is_int(value):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ParameterError(f"config key {key!r} must be an integer, got {value!r}")


def dataset_params(cfg: Config) -> settings.DatasetParams:
    """The named federation of a node's (merged) config."""
    parties = cfg.get("num-partitions", cfg.get("parties"))
    if parties in (None, ""):
        raise ParameterError("a named dataset needs num-partitions (or parties) in the config")
    return settings.from_config(settings.DatasetParams, cfg, parties=_int(parties, "parties"))


def party_data(node: Config, run: Config) -> PartyData:
    """The party data a node's config describes."""
    cfg = {**run, **node}
    raw = cfg.get("partition-id")
    partition = _int(raw, "partition-id") if raw is not None else -1
    name = str(node.get("party-id") or "")
    files = str(node.get("party-file") or "") or str(cfg.get("party-files") or "")
    if files:
        paths = [p.strip() for p in files.split(",") if p.strip()]
        if node.get("party-file"):
            path = Path(paths[0])
        elif 0 <= partition < len(paths):
            path = Path(paths[partition])
        else:
            raise ParameterError(
                f"party-files lists {len(paths)} files; partition-id {partition} has none"
            )
        data = settings.from_config(settings.DatasetParams, cfg)
        ds = settings.load_dataset(data, [path])
        pid = name or (f"party-{partition}" if partition >= 0 else path.stem)
        return PartyData(ds.parties[0], _info(pid, ds, 0, partition, ""))
    data = dataset_params(cfg)
    assert data.parties is not None
    if not 0 <= partition < data.parties:
        raise ParameterError(
            f"partition-id must be in 0..{data.parties - 1} for a named dataset, got {raw!r}"
        )
    source = json.dumps(settings.to_config(data), sort_keys=True, separators=(",", ":"))
    if source not in _FEDERATIONS:
        if len(_FEDERATIONS) >= 4:
            _FEDERATIONS.clear()
        _FEDERATIONS[source] = settings.load_dataset(data)
    ds = _FEDERATIONS[source]
    return PartyData(
        np.asarray(ds.parties[partition], dtype=np.uint64),
        _info(name or f"party-{partition}", ds, partition, partition, source),
    )


def _info(
    pid: str, ds: FederatedDataset, index: int, order: int, source: str
) -> protocol_pb2.PartyInfo:
    return protocol_pb2.PartyInfo(
        party_id=pid,
        users=int(ds.party_sizes[index]),
        codec=codec_name(ds.codec),
        order=order,
        data=source,
    )
