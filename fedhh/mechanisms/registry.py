"""Every mechanism, declared once (docs/mechanisms.md §4–6): what its parties do, whether it pools
the users, passes a prior, ends with a completion round, or is a published baseline. One line
per mechanism; its plan is its entry in :data:`fedhh.mechanisms.plans.PLANS`, its levels and
rounds :func:`fedhh.mechanisms.layout.layout_of`.

The layers ask the mechanism, not its name: the engine whether to pool every party's users
(:attr:`Mechanism.pools_users`), a party which requests it answers (:attr:`Mechanism.estimates`,
:attr:`Mechanism.search`) and whether it keeps a completion reserve, the parameters which
defaults apply (:attr:`Mechanism.baseline`). ``params.mech`` looks a run's mechanism up. This
module imports nothing of the mechanisms, so every other one may import it.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedhh.errors import ParameterError


@dataclass(frozen=True)
class Mechanism:
    """What one mechanism is. ``search`` is the :class:`~fedhh.mechanisms.tasks.SearchTask`
    mode its parties run ("pem": from all prefixes of length γ; "phase2": from the shared trie),
    None if they only estimate; ``baseline``: a published baseline, run as published (PEM's
    fixed step η, no pruning, the top-k as the answer, no rules of wide text items)."""

    name: str
    pools_users: bool = False  # every party's users form one population (the reference)
    estimates: bool = False  # parties estimate the levels the coordinator shares
    search: str | None = None
    passes_prior: bool = False  # parties search one after another, given the prior so far
    completion_round: bool = False  # may end with a completion round (``completion`` > 0)
    baseline: bool = False


# fmt: off
REGISTRY: dict[str, Mechanism] = {m.name: m for m in (
    #         name          pools  estimates search    prior  completion baseline
    Mechanism("pem",        True,  False,    "pem",    False, False,     True),
    Mechanism("pem-local",  False, False,    "pem",    False, False,     True),
    Mechanism("pem-global", False, True,     None,     False, False,     True),
    Mechanism("tap",        False, True,     "phase2", False, False,     False),
    Mechanism("taps",       False, True,     "phase2", True,  True,      False),
)}
# fmt: on


def mechanism_of(name: str) -> Mechanism:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ParameterError(f"unknown mechanism {name!r}") from None


MECHANISMS = tuple(REGISTRY)  # the names, in the order the flags and docs list them
