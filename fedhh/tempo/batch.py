"""One call's inputs as validated numpy views, and the group statistics (docs/tempo.md §2).

numpy arrays or torch tensors in (torch is imported only if a tensor is passed), results back in
the type, dtype and device of the rewards; the checks of the options; the rows' groups, lengths
and outcome rewards (:class:`_Batch`); each group's mean and Bessel-corrected standard deviation
with verl's GRPO conventions (:func:`_moments`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedhh.errors import DataError, ParameterError

IdArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


# ---------------------------------------------------------------------------- array backends
def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".", 1)[0] == "torch"


def _to_numpy(x: Any) -> NDArray[Any]:
    if _is_torch(x):
        t = x.detach()
        if t.is_floating_point() and t.dtype not in _torch_numpy_floats():
            t = t.float()  # bfloat16 has no numpy dtype
        return np.asarray(t.cpu().numpy())
    return np.asarray(x)


def _torch_numpy_floats() -> tuple[Any, ...]:
    import torch

    return (torch.float16, torch.float32, torch.float64)


def _float_dtype(x: Any) -> Any:
    """The floating dtype of the result (the input's if it is floating)."""
    if _is_torch(x):
        import torch

        return x.dtype if x.is_floating_point() else torch.get_default_dtype()
    arr = np.asarray(x)
    return arr.dtype if arr.dtype.kind == "f" else np.dtype(np.float64)


def _numpy_float(dtype: Any) -> np.dtype[Any]:
    """The numpy dtype to compute a result of (numpy or torch) floating ``dtype`` in."""
    if isinstance(dtype, np.dtype):
        return dtype
    import torch

    if dtype == torch.float16:
        return np.dtype(np.float16)
    return np.dtype(np.float64) if dtype == torch.float64 else np.dtype(np.float32)


def _like(arr: NDArray[Any], like: Any, dtype: Any) -> Any:
    """``arr`` as the array type of ``like`` (same device), with result dtype ``dtype``."""
    if _is_torch(like):
        import torch

        return torch.from_numpy(arr).to(device=like.device, dtype=dtype)
    return arr


# ---------------------------------------------------------------------------- validation
def _check_eps(epsilon: float) -> float:
    eps = float(epsilon)
    if not np.isfinite(eps) or eps < 0:
        raise ParameterError(f"epsilon must be finite and ≥ 0, got {epsilon!r}")
    return eps


def _check_td(td_coef: float) -> float:
    td = float(td_coef)
    if not np.isfinite(td):
        raise ParameterError(f"td_coef must be finite, got {td_coef!r}")
    return td


def _as_2d(x: Any, name: str, shape: tuple[int, ...] | None = None) -> NDArray[Any]:
    arr = _to_numpy(x)
    if arr.ndim != 2:
        raise DataError(f"{name} must have shape [bs, L], got {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise DataError(f"{name} has shape {arr.shape}, expected {shape}")
    return arr


def _scores(rewards: NDArray[Any], n: int) -> FloatArray:
    """Outcome rewards: row sums of token-level rewards (verl), or the given [bs] vector."""
    if rewards.dtype.kind not in "biuf":
        raise DataError(f"rewards must be numbers, got dtype {rewards.dtype}")
    if rewards.ndim == 2:
        return rewards.sum(axis=1, dtype=np.float64)
    if rewards.ndim == 1 and rewards.shape[0] == n:
        return rewards.astype(np.float64)
    raise DataError(f"rewards must have shape [{n}] or [{n}, L], got {rewards.shape}")


def _factorize(index: Any, n: int) -> tuple[IdArray, list[Any]]:
    """Group codes 0..g−1 in order of first appearance, and the uid of each group."""
    if _is_torch(index):
        index = index.detach().cpu().numpy()
    arr = np.asarray(index) if not isinstance(index, np.ndarray) else index
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(f"index must have shape [{n}], got {np.shape(arr)}")
    if n == 0:
        return np.zeros(0, dtype=np.int64), []
    if arr.dtype.kind in "biuUS":
        uniq, first, inv = np.unique(arr, return_index=True, return_inverse=True)
        rank = np.empty(uniq.size, dtype=np.int64)
        by_first = np.argsort(first, kind="stable")
        rank[by_first] = np.arange(uniq.size)
        return rank[inv.reshape(-1)], uniq[by_first].tolist()
    seen: dict[Any, int] = {}
    try:
        codes = np.fromiter(
            (seen.setdefault(u, len(seen)) for u in arr.tolist()), dtype=np.int64, count=n
        )
    except TypeError as exc:
        raise DataError(f"index values must be hashable: {exc}") from None
    return codes, list(seen)


@dataclass
class _Batch:
    """Validated numpy views of one call's inputs."""

    n: int
    width: int
    mask: NDArray[np.bool_]
    lengths: IdArray
    prefix_rows: NDArray[np.bool_]  # rows whose mask is 1…1 0…0
    codes: IdArray
    groups: list[Any]
    scores: FloatArray | None


def _prepare(
    rewards: Any, response_mask: Any, index: Any, responses: Any | None
) -> tuple[_Batch, NDArray[Any] | None]:
    mask_in = _to_numpy(response_mask)
    if mask_in.ndim != 2:
        raise DataError(f"response_mask must have shape [bs, L], got {mask_in.shape}")
    n, width = mask_in.shape
    mask = mask_in if mask_in.dtype == np.bool_ else mask_in != 0
    tokens = None
    if responses is not None:
        tokens = _as_2d(responses, "responses", (n, width))
        if tokens.dtype.kind not in "biu":
            raise DataError(f"responses must be integer token ids, got dtype {tokens.dtype}")
    scores = None if rewards is None else _scores(_to_numpy(rewards), n)
    codes, groups = _factorize(index, n)
    lengths = np.count_nonzero(mask, axis=1).astype(np.int64)
    if width:
        first_zero = np.argmin(mask, axis=1)  # stops at the first False
        prefix_rows = (lengths == width) | (first_zero == lengths)
    else:
        prefix_rows = np.ones(n, dtype=np.bool_)
    batch = _Batch(n, width, mask, lengths, prefix_rows, codes, groups, scores)
    return batch, tokens


# ---------------------------------------------------------------------------- group statistics
@dataclass
class _Moments:
    count: IdArray  # [g]
    ref: FloatArray  # [g] a member's reward (the smallest), to centre sums exactly
    mean: FloatArray  # [g] μ as used in the advantage (0 for a group of one)
    std: FloatArray  # [g] σ (ddof 1; 1 for a group of one)
    centred: FloatArray  # [bs] r_i − ref
    numerator: FloatArray  # [bs] r_i − μ


def _moments(scores: FloatArray, codes: IdArray, n_groups: int) -> _Moments:
    """Group mean and unbiased std (verl's GRPO conventions), order-independent to the bit."""
    count = np.bincount(codes, minlength=n_groups).astype(np.int64)
    if scores.size == 0:
        empty = np.zeros(0, dtype=np.float64)
        return _Moments(count, empty, empty, empty, empty, empty)
    order = np.lexsort((scores, codes))
    starts = np.concatenate(([0], np.cumsum(count)[:-1]))
    ref = scores[order][starts]
    centred = scores - ref[codes]
    mean_c = np.add.reduceat(centred[order], starts) / count
    dev = centred - mean_c[codes]
    ss = np.add.reduceat((dev * dev)[order], starts)
    single = count == 1
    std = np.where(single, 1.0, np.sqrt(ss / np.maximum(count - 1, 1)))
    mean = np.where(single, 0.0, ref + mean_c)
    numerator = np.where(single[codes], scores, dev)
    return _Moments(count, ref, mean, std, centred, numerator)
