"""Tests of TEMPO's inputs and layouts (fedhh.tempo; docs/tempo.md §3): TRL's layout, dtypes and
token ids, empty and singleton batches, errors, torch tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tempo_cases import GOLDEN_UNNORM, SETTINGS, Batch, batches, golden_inputs
from tempo_reference import reference_tempo

from fedhh.errors import DataError, ParameterError
from fedhh.tempo import (
    build_prefix_tree,
    grpo_advantages,
    tempo_advantages,
    tempo_advantages_trl,
)


@SETTINGS
@given(b=batches(holes=False), one_d=st.booleans())
def test_trl_helper_matches_verl_layout(b: Batch, one_d: bool) -> None:
    n = len(b.seqs)
    k = n  # one prompt in TRL's layout; also try blocks when they divide evenly
    for gen in sorted({k, 1, *(d for d in (2, 3) if n % d == 0)}):
        index = np.arange(n) // gen
        rewards = b.scores if one_d else b.rewards
        got = tempo_advantages_trl(rewards, b.mask, b.responses, gen, epsilon=1e-4)
        ref, _ = tempo_advantages(b.rewards, b.mask, index, b.responses, epsilon=1e-4)
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    off = tempo_advantages_trl(b.scores, b.mask, b.responses, 1, scale_rewards="none")
    assert np.array_equal(
        off, tempo_advantages_trl(b.scores, b.mask, b.responses, 1, scale_rewards=False)
    )


@SETTINGS
@given(b=batches(holes=False), data=st.data())
def test_trl_helper_batch_scaling_and_unscorable(b: Batch, data: Any) -> None:
    """TRL's scale_rewards="batch" and its NaN reward for an unscorable completion."""
    n = len(b.seqs)
    index = np.zeros(n, dtype=np.int64)
    got = tempo_advantages_trl(b.scores, b.mask, b.responses, n, scale_rewards="batch")
    raw, _ = tempo_advantages(b.rewards, b.mask, index, b.responses, norm_adv_by_std_in_grpo=False)
    std = np.std(b.scores, ddof=1) if n > 1 else 0.0
    np.testing.assert_allclose(got, raw / (std + 1e-4), rtol=1e-12, atol=1e-12)
    if n < 2:
        return
    drop = data.draw(st.integers(0, n - 1))
    scores = b.scores.copy()
    scores[drop] = np.nan
    keep = np.arange(n) != drop
    for scale in ("group", "batch", "none"):
        got = tempo_advantages_trl(scores, b.mask, b.responses, n, scale_rewards=scale)
        assert (got[drop] == 0).all()
        ref = tempo_advantages_trl(
            b.scores[keep], b.mask[keep], b.responses[keep], n - 1, scale_rewards=scale
        )
        np.testing.assert_allclose(got[keep], ref, rtol=1e-12, atol=1e-12)


def test_inputs_not_mutated_and_dtypes() -> None:
    rewards, mask, index, resp = golden_inputs()
    copies = [x.copy() for x in (rewards, mask, index, resp)]
    a, _ = tempo_advantages(
        rewards.astype(np.float32), mask.astype(bool), index, resp.astype(np.int32)
    )
    assert a.dtype == np.float32
    for x, c in zip((rewards, mask, index, resp), copies, strict=True):
        assert np.array_equal(x, c)
    a64, _ = tempo_advantages(rewards.astype(int), mask, index.tolist(), resp)
    assert a64.dtype == np.float64


def test_token_id_ranges() -> None:
    rewards, mask, index, resp = golden_inputs()
    ref, _ = tempo_advantages(rewards, mask, index, resp)
    for tokens in (
        resp - 100,  # negative ids
        resp * 10**6,  # beyond 16 bits
        resp.astype(np.int64) * 2**40 - 2**62,  # beyond 32 bits, negative
        resp.astype(np.uint64) * np.uint64(2**60),
        (resp + 118).astype(np.int8),  # up to 127: no overflow when shifted by one
        resp.astype(np.uint8),
    ):
        got, _ = tempo_advantages(rewards, mask, index, tokens)
        np.testing.assert_allclose(got, ref, rtol=1e-12)
    pad = resp.copy()
    pad[:, 3] = 1  # pads may be real tokens
    m = mask.copy()
    m[:, 3] = 0
    got, _ = tempo_advantages(rewards, m, index, pad)
    ref2 = reference_tempo(rewards, m, index, pad)
    np.testing.assert_allclose(got, ref2, atol=1e-9)


def test_empty_and_singleton_edge_cases() -> None:
    a, _ = tempo_advantages(np.zeros((0, 3)), np.zeros((0, 3)), np.array([]), np.zeros((0, 3), int))
    assert a.shape == (0, 3)
    a, _ = tempo_advantages(
        np.ones((2, 0)), np.ones((2, 0)), np.array([1, 1]), np.ones((2, 0), int)
    )
    assert a.shape == (2, 0)
    rew = np.array([[0.0, 2.0]])
    a, _ = tempo_advantages(rew, np.array([[1, 1]]), np.array(["x"]), np.array([[1, 2]]))
    np.testing.assert_allclose(a, [[2 / (1 + 1e-6)] * 2])
    mask0 = np.zeros((3, 2))
    a, _ = tempo_advantages(np.ones((3, 2)), mask0, np.array([0, 0, 0]), np.ones((3, 2), int))
    assert (a == 0).all()


def test_errors() -> None:
    rewards, mask, index, resp = golden_inputs()
    with pytest.raises(DataError):
        tempo_advantages(rewards, mask[:, :3], index, resp)
    with pytest.raises(DataError):
        tempo_advantages(rewards, mask, index[:3], resp)
    with pytest.raises(DataError):
        tempo_advantages(rewards, mask, index, resp[:, :2])
    with pytest.raises(DataError):
        tempo_advantages(rewards, mask, index, resp.astype(float))
    with pytest.raises(DataError):
        grpo_advantages(rewards[0], mask, index)
    # the options are keyword-only: verl's positional epsilon cannot land in responses
    with pytest.raises(TypeError):
        tempo_advantages(rewards, mask, index, resp, 1e-6)  # type: ignore[misc]
    with pytest.raises(DataError, match="responses"):
        tempo_advantages(rewards, mask, index, 1e-6)
    with pytest.raises(TypeError):
        grpo_advantages(rewards, mask, index, 1e-6)  # type: ignore[misc]
    with pytest.raises(TypeError):
        build_prefix_tree(resp, mask, index, rewards)  # type: ignore[misc]
    with pytest.raises(ParameterError):
        tempo_advantages(rewards, mask, index, resp, epsilon=-1.0)
    with pytest.raises(ParameterError):
        tempo_advantages(rewards, mask, index, resp, td_coef=float("nan"))
    with pytest.raises(DataError):
        tempo_advantages_trl(rewards, mask, resp, 3)
    with pytest.raises(ParameterError):
        tempo_advantages_trl(rewards, mask, resp, 0)
    with pytest.raises(ParameterError):
        tempo_advantages_trl(rewards, mask, resp, 2, scale_rewards="batchwise")


# ---------------------------------------------------------------- torch
def test_torch_path() -> None:
    torch = pytest.importorskip("torch")
    rewards, mask, index, resp = golden_inputs()
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        tr = torch.tensor(rewards, dtype=dtype)
        tm = torch.tensor(mask)
        tt = torch.tensor(resp)
        before = [x.clone() for x in (tr, tm, tt)]
        a, r = tempo_advantages(tr, tm, index, tt, norm_adv_by_std_in_grpo=False)
        assert isinstance(a, torch.Tensor) and a.dtype == dtype and a.device == tr.device
        assert r is a
        tol = 1e-2 if dtype == torch.bfloat16 else 1e-6
        np.testing.assert_allclose(a.double().numpy(), GOLDEN_UNNORM, atol=tol)
        for x, c in zip((tr, tm, tt), before, strict=True):
            assert torch.equal(x, c)
        g, _ = grpo_advantages(tr, tm, index)
        assert isinstance(g, torch.Tensor) and g.dtype == dtype
    # TRL layout with torch tensors; integer rewards give the default float dtype
    out = tempo_advantages_trl(
        torch.tensor([1, 0, 1, 1]), torch.tensor(mask), torch.tensor(resp), 4
    )
    assert out.dtype == torch.get_default_dtype()
    np.testing.assert_allclose(out.numpy(), GOLDEN_UNNORM / (0.5 + 1e-4), rtol=1e-6)
    # torch index (uids as a tensor)
    a, _ = tempo_advantages(
        torch.tensor(rewards), torch.tensor(mask), torch.zeros(4), torch.tensor(resp)
    )
    np.testing.assert_allclose(a.numpy(), GOLDEN_UNNORM / (0.5 + 1e-6), rtol=1e-9)
