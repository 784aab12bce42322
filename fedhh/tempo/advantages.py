"""GRPO and TEMPO advantages of a batch, in verl's and TRL's layouts (docs/tempo.md §2–3).

GRPO's advantage of a response is its outcome reward centred (and scaled) within its group; TEMPO
adds, at the first token after each branching node of the group's prefix tree
(:mod:`fedhh.tempo.forest`), the step δ in the value of the prefix.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedhh.errors import DataError, ParameterError
from fedhh.tempo.batch import (
    _as_2d,
    _Batch,
    _check_eps,
    _check_td,
    _float_dtype,
    _like,
    _moments,
    _numpy_float,
    _prepare,
    _scores,
    _to_numpy,
)
from fedhh.tempo.forest import _build

__all__ = ["grpo_advantages", "tempo_advantages", "tempo_advantages_trl"]


def _advantages(
    batch: _Batch,
    tokens: NDArray[Any] | None,
    out_dtype: np.dtype[Any],
    epsilon: float,
    norm: bool,
    td_coef: float,
) -> NDArray[Any]:
    assert batch.scores is not None
    mom = _moments(batch.scores, batch.codes, len(batch.groups))
    scale = 1.0 / (mom.std + epsilon) if norm else np.ones_like(mom.std)
    base = mom.numerator * scale[batch.codes]
    out = np.zeros((batch.n, batch.width), dtype=out_dtype)
    np.copyto(out, base.astype(out_dtype)[:, None], where=batch.mask)
    if tokens is None or td_coef == 0.0 or batch.n == 0:
        return out
    forest, vc = _build(batch, tokens, mom)
    par = forest.trie.parent
    depth = forest.trie.depth
    edge = np.flatnonzero(par >= 0)
    p = par[edge]
    edge = edge[forest.branching[p] & (depth[edge] > depth[p])]
    if edge.size == 0:
        return out
    p = par[edge]
    delta = vc[edge] - vc[p]
    sizes = forest.members[edge]
    which = np.repeat(np.arange(edge.size), sizes)
    offset = np.arange(which.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    rows = forest.order[forest.lo[edge][which] + offset]
    pos = depth[p][which]
    cols = forest.columns(rows, pos)
    g = batch.codes[rows]
    out[rows, cols] = base[rows] + td_coef * delta[which] * scale[g]
    return out


def _verl_advantages(
    token_level_rewards: Any,
    response_mask: Any,
    index: Any,
    responses: Any | None,
    epsilon: float,
    norm: bool,
    td_coef: float,
) -> tuple[Any, Any]:
    """verl's layout: token-level rewards [bs, L] in, ``(advantages, returns)`` out as one array.

    Without ``responses`` (GRPO) no tree is built.
    """
    eps = _check_eps(epsilon)
    td = _check_td(td_coef)
    rewards = _as_2d(token_level_rewards, "token_level_rewards")
    batch, tokens = _prepare(rewards, response_mask, index, responses)
    if rewards.shape != (batch.n, batch.width):
        raise DataError(f"token_level_rewards has shape {rewards.shape}, mask {batch.mask.shape}")
    dtype = _float_dtype(token_level_rewards)
    out = _advantages(batch, tokens, _numpy_float(dtype), eps, bool(norm), td)
    res = _like(out, token_level_rewards, dtype)
    return res, res


def grpo_advantages(
    token_level_rewards: Any,
    response_mask: Any,
    index: Any,
    *,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool = True,
) -> tuple[Any, Any]:
    """verl's GRPO outcome advantage, vectorised: ``(advantages, returns)``, both [bs, L].

    score = row sum of ``token_level_rewards``; per uid the mean and the unbiased (torch.std)
    standard deviation, with mean 0 and std 1 for a uid of one row; the advantage
    (score − mean) / (std + ε) (or score − mean without std normalisation) where the mask is
    nonzero, exactly 0 elsewhere.
    Returns equal advantages (the same array, as verl does).
    """
    return _verl_advantages(
        token_level_rewards, response_mask, index, None, epsilon, norm_adv_by_std_in_grpo, 0.0
    )


def tempo_advantages(
    token_level_rewards: Any,
    response_mask: Any,
    index: Any,
    responses: Any,
    *,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool = True,
    td_coef: float = 1.0,
) -> tuple[Any, Any]:
    """TEMPO advantages (docs/tempo.md §2): ``(advantages, returns)``, both [bs, L].

    Same arguments as verl's ``compute_grpo_outcome_advantage`` plus ``responses`` [bs, L] (token
    ids; only positions where the mask is nonzero are read) and ``td_coef`` (0 gives GRPO). The
    options are keyword-only, so an ``epsilon`` given in verl's position cannot land in
    ``responses``.
    """
    return _verl_advantages(
        token_level_rewards,
        response_mask,
        index,
        responses,
        epsilon,
        norm_adv_by_std_in_grpo,
        td_coef,
    )


def tempo_advantages_trl(
    rewards: Any,
    completion_mask: Any,
    completion_ids: Any,
    num_generations: int,
    *,
    epsilon: float = 1e-4,
    scale_rewards: bool | str = True,
    td_coef: float = 1.0,
) -> Any:
    """TEMPO advantages [B, L] for TRL's layout: groups are contiguous blocks of num_generations.

    ``rewards`` is the per-completion reward [B] (as TRL's GRPOTrainer computes it) or token-level
    rewards [B, L]. ``epsilon`` defaults to TRL's 1e-4. ``scale_rewards`` as in TRL: True / "group"
    divides by the group std, "batch" by the std of all B rewards (both Bessel-corrected), False /
    "none" does not divide. A NaN reward marks an unscorable completion (TRL's convention): it is
    left out of its group (statistics and tree) and its advantage is 0. The result has the type,
    dtype and device of ``rewards`` (float32 for integer rewards given as torch tensors).
    """
    if isinstance(num_generations, bool) or not isinstance(num_generations, (int, np.integer)):
        raise ParameterError(f"num_generations must be an integer, got {num_generations!r}")
    k = int(num_generations)
    if k < 1:
        raise ParameterError(f"num_generations must be ≥ 1, got {k}")
    scale = scale_rewards
    if isinstance(scale_rewards, bool):
        scale = "group" if scale_rewards else "none"
    if scale not in ("group", "batch", "none"):
        raise ParameterError(
            f"scale_rewards must be True/False, 'group', 'batch' or 'none', got {scale_rewards!r}"
        )
    eps = _check_eps(epsilon)
    td = _check_td(td_coef)
    ids = _as_2d(completion_ids, "completion_ids")
    n = ids.shape[0]
    if n % k:
        raise DataError(f"batch of {n} completions is not a multiple of num_generations={k}")
    index = np.arange(n, dtype=np.int64) // k
    raw = _to_numpy(rewards)
    if raw.dtype.kind not in "biuf":
        raise DataError(f"rewards must be numbers, got dtype {raw.dtype}")
    scores = _scores(raw, n)
    unscorable = np.isnan(scores)
    if unscorable.any():  # each in a group of its own, advantage 0
        index[unscorable] = -1 - np.flatnonzero(unscorable)
        scores = np.where(unscorable, 0.0, scores)
    batch, tokens = _prepare(scores, completion_mask, index, ids)
    if batch.mask.shape != ids.shape:
        raise DataError(f"completion_mask has shape {batch.mask.shape}, ids {ids.shape}")
    dtype = _float_dtype(rewards)
    if scale == "batch":
        out = _advantages(batch, tokens, np.dtype(np.float64), eps, False, td)
        valid = scores[~unscorable]
        std = float(np.std(valid, ddof=1)) if valid.size > 1 else 0.0
        out = out / (std + eps)
    else:
        out = _advantages(batch, tokens, np.dtype(np.float64), eps, scale == "group", td)
    out[unscorable] = 0.0
    return _like(out.astype(_numpy_float(dtype), copy=False), rewards, dtype)
