"""Vectorised ε-LDP frequency oracles: GRR, OUE, OLH, seed-pool OLH and affine-hash OLH.

Every oracle is an immutable value object built from ε that follows :class:`FrequencyOracle`:
``perturb`` (user side, vectorised over users), ``support`` (mergeable server state), ``debias`` /
``estimate`` (unbiased counts for the candidates only) and ``variance`` (docs/mechanisms.md §2),
and declares what the other layers ask of it (its report layout and bytes, decode work, whether
users need the candidates, its public parameters; :mod:`fedhh.oracles.base`). :data:`ORACLES` is
the registry, one line per oracle: nothing outside this package switches on an oracle's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import cast

from fedhh.core.variation import VariationRatio
from fedhh.errors import ParameterError
from fedhh.oracles.affine import OLHAffine
from fedhh.oracles.base import (
    FrequencyOracle,
    ReportField,
    ReportLayout,
    Reports,
    Support,
    Tally,
    check_epsilon,
)
from fedhh.oracles.grr import GRR
from fedhh.oracles.olh import OLH, OLHPool, PoolSketch, optimal_g
from fedhh.oracles.oue import OUE
from fedhh.oracles.postprocess import clip_to_zero, noise_z, norm_sub

__all__ = [
    "GRR",
    "OLH",
    "ORACLES",
    "OUE",
    "FrequencyOracle",
    "OLHAffine",
    "OLHPool",
    "PoolSketch",
    "ReportField",
    "ReportLayout",
    "Reports",
    "Support",
    "Tally",
    "choose_oracle",
    "clip_to_zero",
    "make_oracle",
    "noise_z",
    "norm_sub",
    "optimal_g",
    "oracle_class",
    "oracle_from",
    "variation_profiles",
]

ORACLES: dict[str, type[FrequencyOracle]] = {
    "grr": GRR,
    "oue": OUE,
    "olh": OLH,
    "olh-pool": OLHPool,
    "olh-affine": OLHAffine,
}


def choose_oracle(epsilon: float, domain_size: int) -> FrequencyOracle:
    """``auto`` [choice]: the oracle with the smallest Var* for a domain of ``domain_size``
    symbols (|C| + 1). GRR wins for small domains (d < 3e^ε + 2); otherwise OLH, whose variance
    equals OUE's to within g's rounding while its reports are O(1) instead of O(d) bits (OUE is
    taken only when it is more than 1% better)."""
    eps = check_epsilon(epsilon)
    grr, olh, oue = GRR(eps), OLH(eps), OUE(eps)
    v_grr, v_olh, v_oue = (o.variance(1, domain_size) for o in (grr, olh, oue))
    best: FrequencyOracle = grr if v_grr <= v_olh else olh
    if v_oue < 0.99 * min(v_grr, v_olh):
        best = oue
    return best


def oracle_class(name: str) -> type[FrequencyOracle]:
    """The registered oracle of this name (:class:`ParameterError` for any other name)."""
    try:
        return ORACLES[name]
    except KeyError:
        raise ParameterError(
            f"unknown oracle {name!r}; choose one of {', '.join(ORACLES)} or 'auto'"
        ) from None


def make_oracle(name: str, epsilon: float, **params: int) -> FrequencyOracle:
    """Build an oracle by name ("grr", "oue", "olh", "olh-pool", "olh-affine") with its
    parameters."""
    return cast(Callable[..., FrequencyOracle], oracle_class(name))(epsilon, **params)


def oracle_from(name: str, epsilon: float, offered: Mapping[str, int]) -> FrequencyOracle:
    """Build an oracle by name with those of the ``offered`` parameters it takes (its
    ``parameter_names``; the others are not its own and are left out): how a run's parameters
    or a report task's fields become an oracle without knowing which oracle takes which."""
    own = oracle_class(name).parameter_names
    return make_oracle(name, epsilon, **{k: int(v) for k, v in offered.items() if k in own})


def variation_profiles(epsilon: float) -> Callable[[str, int], VariationRatio | None]:
    """(oracle name, domain size) -> that oracle's variation-ratio profile at ε (its default
    parameters: a run sets none that the profile depends on), for the privacy block."""

    def profile(name: str, domain_size: int) -> VariationRatio | None:
        return oracle_from(name, epsilon, {}).variation_ratio(domain_size)

    return profile
