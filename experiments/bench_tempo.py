"""Benchmark of TEMPO advantages (fedhh.tempo) against a per-token Python reference loop.

A training batch of B prompts × G responses × L tokens with realistic branching: each response
shares a prefix of random length with an earlier response of its prompt (some are exact
duplicates), ends with EOS and is right-padded (the pad id is the EOS id, so only the mask tells
where a response ends). Rewards are 0/1 on the last response token, as in verl.

Prints the wall time of ``tempo_advantages``, ``grpo_advantages`` and ``build_prefix_tree`` (best
of --repeats) and the speed-up over a straightforward per-token dict-trie loop run on a subsample
of prompts and scaled to the whole batch; also checks that both agree on the subsample.

    .venv/bin/python experiments/bench_tempo.py                 # B=512, G=7, L=8192
    .venv/bin/python experiments/bench_tempo.py --torch         # also with torch CPU tensors
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test tooling
from tempo_reference import reference_tempo

from fedhh.tempo import build_prefix_tree, grpo_advantages, tempo_advantages

EOS = 151643  # Qwen2's <|endoftext|>, also its pad id


def make_batch(
    prompts: int, group: int, length: int, vocab: int, seed: int, worst_case: bool = False
) -> dict[str, Any]:
    """B·G right-padded responses with shared prefixes of random length.

    ``worst_case``: the responses of a prompt are identical and fill all L tokens (the longest
    possible prefix comparisons).
    """
    rng = np.random.default_rng(seed)
    n = prompts * group
    responses = rng.integers(0, vocab, size=(n, length), dtype=np.int64)
    lengths = rng.integers(length // 16, length + 1, size=n)
    if worst_case:
        lengths[:] = length
        responses = np.repeat(responses[::group], group, axis=0)
    for p in range(prompts if not worst_case else 0):
        base = p * group
        for k in range(1, group):
            i = base + k
            j = base + int(rng.integers(0, k))  # an earlier response of the same prompt
            if rng.random() < 0.05:  # an exact duplicate
                responses[i] = responses[j]
                lengths[i] = lengths[j]
                continue
            share = int(rng.integers(0, min(lengths[i], lengths[j])))
            responses[i, :share] = responses[j, :share]
    rows = np.arange(n)
    responses[rows, lengths - 1] = EOS
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
    responses[mask == 0] = EOS  # right padding with the pad (= EOS) id
    rewards = np.zeros((n, length), dtype=np.float32)
    rewards[rows, lengths - 1] = rng.integers(0, 2, size=n)
    index = np.array([f"prompt-{p}" for p in range(prompts) for _ in range(group)], dtype=object)
    # verl shuffles nothing here, but uids need not be contiguous: interleave the groups
    perm = rng.permutation(n)
    return {
        "token_level_rewards": rewards[perm],
        "response_mask": mask[perm],
        "index": index[perm],
        "responses": responses[perm],
    }


def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--prompts", type=int, default=512)
    ap.add_argument("--group", type=int, default=7)
    ap.add_argument("--length", type=int, default=8192)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ref-prompts", type=int, default=32, help="prompts in the reference run")
    ap.add_argument("--torch", action="store_true", help="also time torch CPU tensor inputs")
    ap.add_argument(
        "--worst-case", action="store_true", help="identical full-length responses per prompt"
    )
    args = ap.parse_args(argv)

    batch = make_batch(
        args.prompts, args.group, args.length, args.vocab, args.seed, args.worst_case
    )
    n = args.prompts * args.group
    mask = batch["response_mask"]
    print(
        f"batch: {args.prompts} prompts x {args.group} responses x L={args.length} "
        f"({n} rows, {int(mask.sum()):,} response tokens); numpy {np.__version__}, "
        f"python {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    forest = build_prefix_tree(
        batch["responses"], mask, batch["index"], rewards=batch["token_level_rewards"]
    )
    branch_depths = forest.depths[forest.branching]
    mean_depth = f"{branch_depths.mean():.0f}" if branch_depths.size else "-"
    print(
        f"forest: {len(forest.trie):,} nodes, {branch_depths.size:,} branch points, "
        f"mean branch depth {mean_depth} tokens"
    )

    t_tempo = best_time(lambda: tempo_advantages(**batch), args.repeats)
    t_grpo = best_time(
        lambda: grpo_advantages(batch["token_level_rewards"], mask, batch["index"]), args.repeats
    )
    t_tree = best_time(
        lambda: build_prefix_tree(
            batch["responses"], mask, batch["index"], rewards=batch["token_level_rewards"]
        ),
        args.repeats,
    )
    print(f"tempo_advantages   best {t_tempo[0]:.3f} s   median {t_tempo[1]:.3f} s")
    print(f"grpo_advantages    best {t_grpo[0]:.3f} s   median {t_grpo[1]:.3f} s")
    print(f"build_prefix_tree  best {t_tree[0]:.3f} s   median {t_tree[1]:.3f} s")

    if args.torch:
        import torch

        tb: dict[str, Any] = {
            k: (torch.from_numpy(v) if k != "index" else v) for k, v in batch.items()
        }
        t_torch = best_time(lambda: tempo_advantages(**tb), args.repeats)
        print(f"tempo_advantages (torch CPU tensors)  best {t_torch[0]:.3f} s")

    # reference loop on a subsample of prompts, scaled to the whole batch
    uids = np.unique(batch["index"])[: args.ref_prompts]
    rows = np.flatnonzero(np.isin(batch["index"], uids))
    sub: dict[str, Any] = {k: v[rows] for k, v in batch.items()}
    t0 = time.perf_counter()
    ref = reference_tempo(
        sub["token_level_rewards"], sub["response_mask"], sub["index"], sub["responses"]
    )
    t_ref = time.perf_counter() - t0
    fast, _ = tempo_advantages(**sub)
    err = float(np.abs(fast - ref).max())
    scale = args.prompts / uids.size
    t_ref_all = t_ref * scale
    print(
        f"reference loop     {t_ref:.2f} s on {uids.size} prompts -> {t_ref_all:.1f} s "
        f"for the batch (scaled x{scale:g})"
    )
    print(f"speed-up of tempo_advantages over the reference loop: {t_ref_all / t_tempo[0]:.0f}x")
    print(f"max |fast - reference| on the subsample: {err:.2e} (float32 output)")
    python = os.path.relpath(sys.executable) if sys.executable else "python"
    cmd = " ".join([python, "experiments/bench_tempo.py", *(argv or sys.argv[1:])])
    print(f"reproduce: {cmd}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
