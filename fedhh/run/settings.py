"""One declaration of a run's parameters, from which every way of setting them is derived.

:class:`~fedhh.mechanisms.params.MechanismParams` (the mechanism) and :class:`DatasetParams`
(the data of a simulated federation) are dataclasses; this module turns their fields into

* ``fedhh simulate`` flags (``--step-rule``, ``--local-start/--no-local-start``, ...;
  :func:`add_flags`, :func:`from_flags`),
* Flower run-config keys (``step-rule = "planned"``; "" means "the default" for a field whose
  default is None; :func:`to_config`, :func:`from_config`),
* and the run spec's ``[params]`` table of ``fedhh query start`` (field names as they are).

Defaults and checks are the dataclasses' own (``__post_init__``), so a field added to either
class is reachable everywhere with no further edit. Help texts are the fields' metadata
(declared with :func:`fedhh.core.declare.param`).
``m`` is not a flag or key: the item codec of the data sets it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from fedhh.core.declare import config_value, help_of, param
from fedhh.core.items import codec_for
from fedhh.datasets import (
    FederatedDataset,
    load_aol,
    load_babynames,
    load_party_files,
    synthetic_urls,
    synthetic_zipf,
)
from fedhh.datasets.babynames import PARTY_RULES
from fedhh.errors import ParameterError
from fedhh.mechanisms import params as mp

T = TypeVar("T")
DATASETS = ("zipf", "aol", "babynames", "urls")
SPLITS = ("dirichlet", "permutation", "iid")
DEFAULT_PARTIES = 8
DERIVED = frozenset({"m"})  # set by the item codec of the data

CHOICES: dict[str, tuple[str, ...]] = {
    "mechanism": mp.MECHANISMS,
    "oracle": mp.ORACLE_CHOICES,
    "step_rule": mp.STEP_RULES,
    "party_order": mp.PARTY_ORDERS,
    "completion_mode": mp.COMPLETION_MODES,
    "phase1_keep": mp.PHASE1_KEEP,
    "depth_rule": mp.DEPTH_RULES,
    "dataset": DATASETS,
    "split": SPLITS,
    "sizes": ("equal", "skewed"),
    "party_by": tuple(PARTY_RULES),
}


@dataclass(frozen=True)
class DatasetParams:
    """The data of a simulated federation (``fedhh simulate``, a Flower run's SuperNodes)."""

    dataset: str = param(
        "zipf",
        "the federation: zipf (synthetic Zipf-distributed integer items), aol (AOL search "
        "queries, 6 bytes), babynames (Israeli baby names 1949–2024, parties by sector) or "
        "urls (synthetic URL-like strings, 256 bits); aol and babynames read a data file",
    )
    parties: int | None = param(
        None,
        "number of parties M of zipf, aol and urls (default 8); babynames takes its parties "
        "from party-by instead",
    )
    users: int = param(200_000, "zipf, urls: users N in all, one item each")
    items: int = param(10_000, "zipf, urls: distinct items the users' items are drawn from")
    zipf_s: float = param(
        1.1, "zipf, urls: Zipf exponent s of the items' popularity (larger: fewer popular items)"
    )
    bits: int = param(32, "zipf: bits m of each integer item (1..64)")
    split: str = param(
        "dirichlet",
        "zipf, aol, urls: how users are split into parties: dirichlet (non-IID, Dirichlet(α) "
        "per item), permutation (each party its own popularity order) or iid",
    )
    alpha: float = param(
        0.5, "split dirichlet: concentration α (smaller: more non-IID; 0.1 strongly so)"
    )
    sizes: str = param(
        "equal", "party sizes: equal, or skewed (party i's share ∝ 1/(i+1), the first largest)"
    )
    data_seed: int = param(
        0, "seed of the synthetic data, the split and any sampling of users (not the run's seed)"
    )
    data_path: str = param(
        "",
        "aol, babynames: the data file or the folder holding it (default: $FEDHH_DATA_DIR, "
        "then ../shared/data/ beside the project)",
    )
    max_users: int | None = param(
        None, "aol, babynames: keep a random sample of this many users (default: all)"
    )
    party_by: str | None = param(
        None,
        "babynames: parties are sector × sex (sector-sex, 8 parties; the default) or sector × "
        "decade (sector-decade)",
    )
    years: str = param(
        "", "babynames: keep the births of these years, FIRST-LAST or YEAR (default: all)"
    )
    item_bytes: int | None = param(
        None,
        "party files (this or item-bits), babynames: items are strings of at most this many "
        "bytes, 1..64 (m = 8·bytes); babynames default: the longest name",
    )
    item_bits: int | None = param(
        None, "party files: items are non-negative integers of this many bits (1..64)"
    )
    truncate: bool = param(
        False,
        "cut string items longer than item-bytes at a UTF-8 character boundary instead of "
        "refusing the data; the result counts the items and users cut",
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), _kind(DatasetParams, f.name)
            if value is None or kind is not int:
                continue
            if not is_int(value) or value < 0:
                raise ParameterError(f"{f.name} must be an integer ≥ 0, got {value!r}")
        for name in ("parties", "users", "items", "bits"):
            if getattr(self, name) == 0:
                raise ParameterError(f"{name} must be ≥ 1")
        for name, allowed in CHOICES.items():
            value = getattr(self, name, None)
            if value is not None and hasattr(self, name) and value not in allowed:
                raise ParameterError(
                    f"unknown {name} {value!r}; choose one of {', '.join(allowed)}"
                )

    def year_range(self) -> tuple[int, int] | None:
        if not self.years:
            return None
        first, dash, last = self.years.partition("-")
        try:
            return int(first), int(last) if dash else int(first)
        except ValueError:
            raise ParameterError(
                f"years: expected YEAR or FIRST-LAST, got {self.years!r}"
            ) from None


def load_dataset(d: DatasetParams, party_files: list[Path] | None = None) -> FederatedDataset:
    """The federation ``d`` describes (or the given party files, one party each)."""
    if party_files:
        codec = codec_for(d.item_bytes, d.item_bits, truncate=d.truncate)
        return load_party_files(party_files, codec=codec)
    path = d.data_path or None
    if d.dataset != "babynames" and (d.party_by is not None or d.years):
        raise ParameterError("party_by and years apply to the babynames dataset only")
    if d.dataset == "babynames":
        if d.parties is not None:
            raise ParameterError(
                "parties does not apply to babynames: its parties are sector × sex "
                "(or sector × decade with party_by sector-decade)"
            )
        if d.item_bits is not None:
            raise ParameterError("item_bits applies to party files only")
        return load_babynames(
            path,
            party_by=d.party_by or "sector-sex",
            years=d.year_range(),
            item_bytes=d.item_bytes,
            truncate=d.truncate,
            max_users=d.max_users,
            seed=d.data_seed,
        )
    if d.item_bytes is not None or d.item_bits is not None or d.truncate:
        raise ParameterError("item_bytes/item_bits/truncate apply to party files and babynames")
    parties = DEFAULT_PARTIES if d.parties is None else d.parties
    common: dict[str, Any] = {
        "split": d.split,
        "alpha": d.alpha,
        "sizes": d.sizes,
        "seed": d.data_seed,
    }
    if d.dataset == "aol":
        return load_aol(path, n_parties=parties, max_users=d.max_users, **common)
    if d.dataset == "urls":
        return synthetic_urls(d.users, parties, n_items=d.items, s=d.zipf_s, **common)
    return synthetic_zipf(d.users, parties, m=d.bits, n_items=d.items, s=d.zipf_s, **common)


def is_int(value: object) -> bool:
    """An integer, and not a bool (which Python counts as one)."""
    return isinstance(value, int) and not isinstance(value, bool)


# --- the mapping, derived from the fields --------------------------------------------------------
@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _kind(cls: type, name: str) -> type:
    """int, float, str or bool: the field's type without ``| None``."""
    hint = _hints(cls)[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.cast(type, hint)


def _optional(cls: type, name: str) -> bool:
    return type(None) in typing.get_args(_hints(cls)[name])


def _fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name not in DERIVED]


def key(name: str) -> str:
    """The flag / run-config spelling of a field name."""
    return name.replace("_", "-")


def coerce(cls: type, name: str, value: Any) -> Any:
    """``value`` as the field's type ("" or None: the default of an optional field)."""
    if value is None or (value == "" and _optional(cls, name)):
        return None
    kind = _kind(cls, name)
    if kind is float and is_int(value):
        return float(value)
    if kind in (int, float) and isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            raise ParameterError(f"{key(name)} must be {kind.__name__}, got {value!r}") from None
    if kind is bool and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not (is_int(value) if kind is int else isinstance(value, kind)):
        raise ParameterError(f"{key(name)} must be {kind.__name__}, got {value!r}")
    return value


def _flag_value(cls: type, name: str, text: str) -> Any:
    try:
        return coerce(cls, name, text)
    except ParameterError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_flags(
    parser: argparse.ArgumentParser, cls: type, title: str, skip: Collection[str] = ()
) -> None:
    """One flag per field of ``cls`` but those in ``skip`` (bools as ``--x/--no-x``); defaults
    stay the class's."""
    group = parser.add_argument_group(title)
    defaults = cls()
    helps = {f.name: help_of(f) for f in dataclasses.fields(cls)}
    for name in _fields(cls):
        if name in skip:
            continue
        flag = "-k" if name == "k" else f"--{key(name)}"
        default = getattr(defaults, name)
        shown = f" (default {default})" if default not in (None, "") else ""
        helptext = helps[name] + shown
        if _kind(cls, name) is bool:
            group.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=helptext
            )
            continue
        group.add_argument(
            flag,
            dest=name,
            default=None,
            choices=CHOICES.get(name),
            metavar=None if name in CHOICES else key(name).upper(),
            type=functools.partial(_flag_value, cls, name),
            help=helptext,
        )


def add_data_flags(parser: argparse.ArgumentParser, title: str, party_file_help: str) -> None:
    """The data flags: one per :class:`DatasetParams` field, and ``--party-file`` (repeated, one
    file per party) for a federation of data files instead; read by :func:`data_from_flags`."""
    add_flags(parser, DatasetParams, title)
    parser.add_argument(
        "--party-file", action="append", type=Path, metavar="PATH", help=party_file_help
    )


def data_from_flags(args: argparse.Namespace) -> tuple[DatasetParams, FederatedDataset]:
    """The data flags of :func:`add_data_flags` and the federation they give."""
    data = from_flags(DatasetParams, args)
    return data, load_dataset(data, args.party_file)


def from_flags(cls: type[T], args: argparse.Namespace, **fixed: Any) -> T:
    """An instance from the flags the user gave (others keep the class's defaults)."""
    given = {n: getattr(args, n) for n in _fields(cls) if getattr(args, n, None) is not None}
    return cls(**{**given, **fixed})


def to_config(obj: object) -> dict[str, Any]:
    """The run-config entries of a dataclass instance (None as "")."""
    return {key(n): ("" if (v := getattr(obj, n)) is None else v) for n in _fields(type(obj))}


def from_config(cls: type[T], cfg: Mapping[str, Any], **fixed: Any) -> T:
    """An instance from run-config entries (missing keys keep the class's defaults)."""
    given = {n: coerce(cls, n, cfg[key(n)]) for n in _fields(cls) if key(n) in cfg}
    return cls(**{**given, **fixed})


def params_from_table(table: Mapping[str, Any]) -> mp.MechanismParams:
    """The run spec's ``[params]`` table (field names as in the dataclass)."""
    unknown = sorted(set(table) - {f.name for f in dataclasses.fields(mp.MechanismParams)})
    if unknown:
        raise ParameterError(f"unknown run parameter(s): {', '.join(unknown)}")
    return mp.MechanismParams(**{n: coerce(mp.MechanismParams, n, v) for n, v in table.items()})


def run_spec_text(
    parties: Sequence[str],
    params: mp.MechanismParams,
    names: Collection[str] | None = None,
    *,
    run_id: str | None = None,
    policy: str = "continue",
    deadline_seconds: float = 300,
) -> str:
    """A run spec for ``fedhh query start`` (TOML): the run id (if given), parties, policy,
    deadline and a ``[params]`` table (read back with :func:`params_from_table`) of the fields of
    ``params`` named in ``names`` (default: all) that are not None."""
    fields = [f.name for f in dataclasses.fields(params) if names is None or f.name in names]
    lines = [
        *([f"run_id = {config_value(run_id)}"] if run_id is not None else []),
        f"parties = [{', '.join(config_value(p) for p in parties)}]",
        f"policy = {config_value(policy)}",
        f"deadline_seconds = {config_value(deadline_seconds)}",
        "[params]",
        *(f"{n} = {config_value(v)}" for n in fields if (v := getattr(params, n)) is not None),
    ]
    return "\n".join(lines) + "\n"
