"""TEMPO in verl 0.9.1, run through verl itself (`make integration`; part of `make test`).

verl is installed from its wheel without dependencies, plus the few packages its trainer modules
import (see the Makefile). The batches are verl ``DataProto``s as the trainer builds them:
left-padded prompts, right-padded responses, attention mask, uids, token-level rewards at the last
response token, rows of a prompt not contiguous (verl's balance_batch reorders them), responses of
one prompt sharing prefixes. The config is verl's own ``ppo_trainer.yaml`` with the README's
overrides.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
verl = pytest.importorskip("verl", reason="verl is not installed: run `make integration`")
pytest.importorskip("hydra", reason="hydra-core (verl's config) is not installed")

import fedhh.integrations.verl as tempo_verl  # noqa: E402
from fedhh.errors import DataError, ParameterError  # noqa: E402
from fedhh.tempo import build_prefix_tree, tempo_advantages  # noqa: E402

pytestmark = pytest.mark.integration


def readme_overrides() -> list[str]:
    """The config lines of the README's verl command (``key=value``, one a line)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### verl\n", 1)[1].split("\n### ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    found = [m.group(1) for m in re.finditer(r"^\s+(\+?[\w.]+=\S+)\s*\\?$", block, re.M)]
    assert "verl.trainer.main_ppo" in block and found
    return found


README_OVERRIDES = readme_overrides()


def verl_config(*overrides: str) -> Any:
    """verl's own trainer config (ppo_trainer.yaml) with ``overrides``, as verl's CLI builds it."""
    import verl.trainer.main_ppo as main_ppo
    from hydra import compose, initialize_config_dir

    config_dir = os.path.join(os.path.dirname(main_ppo.__file__), "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose(config_name="ppo_trainer", overrides=list(overrides))


def verl_batch(seed: int = 0, prompts: int = 4, group: int = 5, length: int = 24) -> Any:
    """A rollout batch as verl's trainer holds it before the advantage step."""
    from verl import DataProto

    rng = np.random.default_rng(seed)
    eos, pad, vocab = 2, 0, 7  # token 0 is the pad id and also a real token
    n = prompts * group
    responses = np.full((n, length), pad, dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    for p in range(prompts):
        for k in range(group):
            row = p * group + k
            size = int(rng.integers(length // 2, length + 1))
            seq = rng.integers(0, vocab, size=size)
            if k and rng.random() < 0.8:  # share a prefix with an earlier response of the prompt
                src = p * group + int(rng.integers(0, k))
                cut = int(rng.integers(1, lengths[src] + 1))
                seq[: min(cut, size)] = responses[src, : min(cut, size)]
            if k and rng.random() < 0.15:  # an exact duplicate
                src = p * group + int(rng.integers(0, k))
                seq = responses[src, : lengths[src]].copy()
            seq[-1] = eos
            seq[:-1][seq[:-1] == eos] = 1
            responses[row, : seq.size] = seq
            lengths[row] = seq.size
    prompt_len = 6
    prompt_ids = np.full((n, prompt_len), pad, dtype=np.int64)
    prompt_mask = np.zeros((n, prompt_len), dtype=np.int64)
    for p in range(prompts):
        size = int(rng.integers(2, prompt_len + 1))
        rows = slice(p * group, (p + 1) * group)
        prompt_ids[rows, prompt_len - size :] = rng.integers(3, vocab, size=size)
        prompt_mask[rows, prompt_len - size :] = 1
    response_mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
    scores = rng.integers(0, 2, size=n).astype(np.float32) + rng.normal(0, 0.1, n).astype(
        np.float32
    )
    token_level = np.zeros((n, length), dtype=np.float32)
    token_level[np.arange(n), lengths - 1] = scores
    uids = np.array([str(uuid.UUID(int=int(rng.integers(2**62)))) for _ in range(prompts)])
    index = np.repeat(uids, group).astype(object)
    order = rng.permutation(n)  # verl's balance_batch reorders rows across prompts
    attention = np.concatenate([prompt_mask, response_mask], axis=1)
    tensors = {
        "prompts": prompt_ids,
        "responses": responses,
        "input_ids": np.concatenate([prompt_ids, responses], axis=1),
        "attention_mask": attention,
        "position_ids": np.clip(np.cumsum(attention, axis=1) - 1, 0, None),
        "token_level_scores": token_level,
        "token_level_rewards": token_level,
    }
    return DataProto.from_dict(
        tensors={k: torch.from_numpy(np.ascontiguousarray(v[order])) for k, v in tensors.items()},
        non_tensors={"uid": index[order]},
    )


def advantages(data: Any, estimator: str, config: Any) -> Any:
    """verl's ``compute_advantage`` (the legacy trainer's and the v1 trainer's) on a copy."""
    from verl.trainer.ppo.ray_trainer import compute_advantage

    out = compute_advantage(
        data.select_idxs(np.arange(len(data))),  # a copy: verl writes into the batch
        adv_estimator=estimator,
        gamma=config.gamma,
        lam=config.lam,
        num_repeat=5,
        norm_adv_by_std_in_grpo=config.get("norm_adv_by_std_in_grpo", True),
        config=config,
    )
    return out.batch["advantages"]


# ---------------------------------------------------------------- the registry
def test_registered_in_verls_registry() -> None:
    from verl.trainer.ppo import core_algos

    fn = core_algos.get_adv_estimator_fn("tempo")
    assert fn is tempo_verl.compute_tempo_outcome_advantage
    import verl.trainer.ppo.ray_trainer as ray_trainer

    assert ray_trainer.compute_advantage.__wrapped__ is not None  # type: ignore[attr-defined]
    tempo_verl.install()  # idempotent: no second wrapper, no second registration
    assert getattr(ray_trainer.compute_advantage.__wrapped__, "__wrapped__", None) is None


def test_td_coef_zero_equals_verls_grpo() -> None:
    data = verl_batch(seed=1)
    config = verl_config(*README_OVERRIDES, "algorithm.tempo.td_coef=0.0").algorithm
    got = advantages(data, "tempo", config)
    grpo = advantages(data, "grpo", config)  # verl's own GRPO loop
    assert got.dtype == grpo.dtype == torch.float32 and got.shape == grpo.shape
    torch.testing.assert_close(got, grpo, rtol=0, atol=2e-7)
    # verl computed the response mask itself from the attention mask
    assert (got[data.batch["attention_mask"][:, -got.shape[1] :] == 0] == 0).all()

    config_dr = verl_config(
        *README_OVERRIDES, "algorithm.tempo.td_coef=0.0", "algorithm.norm_adv_by_std_in_grpo=false"
    ).algorithm
    torch.testing.assert_close(
        advantages(data, "tempo", config_dr), advantages(data, "grpo", config_dr), rtol=0, atol=2e-7
    )


def test_td_coef_uses_the_tree_of_each_prompt() -> None:
    data = verl_batch(seed=2)
    config = verl_config(*README_OVERRIDES).algorithm
    td = tempo_verl.tempo_options(config)["td_coef"]
    assert td > 0 and README_OVERRIDES[0] == "algorithm.adv_estimator=tempo"
    got = advantages(data, "tempo", config).double().numpy()
    grpo = advantages(data, "grpo", config).double().numpy()
    b = data.batch
    mask = b["attention_mask"][:, -b["responses"].shape[1] :].numpy()
    index = data.non_tensor_batch["uid"]
    resp = b["responses"].numpy()
    ref, _ = tempo_advantages(
        b["token_level_rewards"].double().numpy(), mask, index, resp, td_coef=td
    )
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)

    # TEMPO differs from GRPO exactly on the tokens emitted at a branching node of the tree
    forest = build_prefix_tree(resp, mask, index, rewards=b["token_level_rewards"].numpy())
    trie = forest.trie
    branch_tokens = np.zeros_like(mask, dtype=bool)
    for node in np.flatnonzero(trie.parent >= 0):
        parent = trie.parent[node]
        delta = trie.get_stat("delta", [node])[0]
        if forest.branching[parent] and trie.depth[node] > trie.depth[parent] and delta != 0:
            rows = forest.rows_under(node)
            branch_tokens[rows, trie.depth[parent]] = True  # right-padded: position = column
    differs = ~np.isclose(got, grpo, rtol=0, atol=1e-6)
    assert branch_tokens.any()
    assert np.array_equal(differs, branch_tokens)

    # the same rewards on other token ids: every response of a prompt starts with its own token,
    # so the trees split at the root. GRPO does not move; TEMPO does, at the first token only.
    split = data.select_idxs(np.arange(len(data)))
    first = torch.tensor(
        [np.flatnonzero(index[: i + 1] == index[i]).size for i in range(len(data))]
    )
    split.batch["responses"] = b["responses"].clone()
    split.batch["responses"][:, 0] = 100 + first
    other = advantages(split, "tempo", config).double().numpy()
    np.testing.assert_array_equal(advantages(split, "grpo", config).double().numpy(), grpo)
    assert not np.allclose(other, got)
    np.testing.assert_allclose(other[:, 1:], grpo[:, 1:], rtol=0, atol=1e-6)
    scale = 1 + td  # δ at the root's child of one response = r − μ, weighted by td_coef
    np.testing.assert_allclose(other[:, 0], grpo[:, 0] * scale, rtol=1e-5, atol=1e-6)


def test_estimator_needs_token_ids_and_checks_options() -> None:
    from verl.trainer.ppo import core_algos

    data = verl_batch(seed=3)
    b = data.batch
    mask = b["attention_mask"][:, -b["responses"].shape[1] :]
    fn = core_algos.get_adv_estimator_fn("tempo")
    kwargs = {
        "token_level_rewards": b["token_level_rewards"],
        "response_mask": mask,
        "config": verl_config(*README_OVERRIDES).algorithm,
        "index": data.non_tensor_batch["uid"],
    }
    with pytest.raises(DataError, match="VERL_USE_EXTERNAL_MODULES"):
        fn(**kwargs)  # called outside compute_advantage: no batch, no token ids
    a, r = fn(**kwargs, responses=b["responses"])
    assert a is r and a.shape == mask.shape
    with pytest.raises(DataError, match="shape"):
        fn(**kwargs, responses=b["responses"][:, :-1])
    with pytest.raises(DataError, match="uid"):
        fn(**{**kwargs, "index": None}, responses=b["responses"])
    typo = verl_config(*README_OVERRIDES, "+algorithm.tempo.td_coeff=1.0").algorithm
    with pytest.raises(ParameterError, match="td_coeff"):
        fn(**{**kwargs, "config": typo}, responses=b["responses"])


# ---------------------------------------------------------------- inside verl's Ray TaskRunner
class ProbeTaskRunner:
    """Stands in for verl's TaskRunner: a Ray actor that computes the advantages of ``batch``.

    It imports nothing of fedhh itself: TEMPO is there only if the config's runtime_env made
    verl import it. It saves what it computed to ``out_path``.
    """

    batch: Any = None
    out_path: str = ""

    def run(self, config: Any) -> None:
        from verl.trainer.ppo.ray_trainer import compute_advantage

        out = compute_advantage(
            self.batch,
            adv_estimator=config.algorithm.adv_estimator,
            gamma=config.algorithm.gamma,
            lam=config.algorithm.lam,
            num_repeat=5,
            norm_adv_by_std_in_grpo=config.algorithm.get("norm_adv_by_std_in_grpo", True),
            config=config.algorithm,
        )
        imported = "fedhh.integrations.verl" in sys.modules
        torch.save((out.batch["advantages"], imported, os.getpid()), self.out_path)


def test_tempo_inside_verls_ray_task_runner(tmp_path: Any) -> None:
    """verl's launcher ``run_ppo`` with the README's config lines: TEMPO runs in the TaskRunner."""
    ray = pytest.importorskip("ray")
    from ray import cloudpickle
    from verl.trainer.main_ppo import run_ppo

    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)  # the Ray workers cannot import tests/
    data = verl_batch(seed=4)
    out_path = tmp_path / "advantages.pt"
    attrs = {"batch": data, "out_path": str(out_path)}
    runner = ray.remote(num_cpus=0)(type("Runner", (ProbeTaskRunner,), attrs))
    config = verl_config(*README_OVERRIDES, "ray_kwargs.ray_init.num_cpus=1")
    assert not ray.is_initialized()
    try:
        run_ppo(config, task_runner_class=runner)
        adv, imported, pid = torch.load(out_path)
        assert imported and pid != os.getpid()
        expected = advantages(data, "tempo", config.algorithm)
        torch.testing.assert_close(adv, expected, rtol=0, atol=0)
        # without the config line, verl's registry does not know TEMPO
        plain = runner.options(runtime_env={"env_vars": {tempo_verl.ENV_VAR: ""}}).remote()
        with pytest.raises(ray.exceptions.RayTaskError, match="Unknown advantage estimator"):
            ray.get(plain.run.remote(config))
    finally:
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(module)


# ---------------------------------------------------------------- the v1 trainer (the default)
def test_v1_trainer_reads_the_responses_from_transfer_queue() -> None:
    """verl's v1 ``PPOTrainer._compute_advantage`` on a batch stored in a real TransferQueue.

    The v1 trainer reads uids, masks and scores from TransferQueue (not the token ids) and writes
    the advantages back; TEMPO gets the token ids of the same keys.
    """
    ray = pytest.importorskip("ray")
    tq = pytest.importorskip("transfer_queue", reason="TransferQueue (verl's v1 trainer) missing")
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    assert getattr(PPOTrainer._compute_advantage, "__wrapped__", None) is not None
    data = verl_batch(seed=5)
    b = data.batch
    width = b["responses"].shape[1]
    mask = b["attention_mask"][:, -width:]
    lengths = mask.sum(1)
    index = data.non_tensor_batch["uid"]
    rows, keys = [], []
    for i in range(len(data)):  # as verl's agent loop stores its outputs: one key per response
        t = int(lengths[i])
        session = np.flatnonzero(index[:i] == index[i]).size
        keys.append(f"{index[i]}_{session}_0")
        rows.append(
            {
                "uid": index[i],
                "prompts": b["prompts"][i],
                "responses": b["responses"][i, :t],
                "response_mask": mask[i, :t],
                "rm_scores": b["token_level_rewards"][i, :t],
            }
        )

    def v1_advantages(*overrides: str) -> Any:
        config = verl_config(*overrides)
        meta = tq.kv_batch_put(keys=keys, partition_id="train", fields=fields)
        PPOTrainer._compute_advantage(_TrainerState(config), meta, {})
        out = tq.kv_batch_get(keys=keys, partition_id="train", select_fields=["advantages"])
        return out.to_padded_tensor()["advantages"]

    ray.init(num_cpus=2, include_dashboard=False)
    try:
        tq.init(
            verl_config("transfer_queue.backend.SimpleStorage.num_data_storage_units=1")[
                "transfer_queue"
            ]
        )
        fields = list_of_dict_to_tensordict(rows)
        got = v1_advantages(*README_OVERRIDES)
        assert got.shape == (len(data), width)
        expected, _ = tempo_advantages(
            b["token_level_rewards"],
            mask,
            index,
            b["responses"],
            **tempo_verl.tempo_options(verl_config(*README_OVERRIDES).algorithm),
        )
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        grpo = v1_advantages("algorithm.adv_estimator=grpo")  # verl's v1 GRPO
        assert not torch.allclose(got, grpo)
        td0 = v1_advantages(*README_OVERRIDES, "algorithm.tempo.td_coef=0")
        torch.testing.assert_close(td0, grpo, rtol=0, atol=2e-7)
    finally:
        tq.close()
        ray.shutdown()


class _TrainerState:
    """The part of a v1 ``PPOTrainer`` that ``_compute_advantage`` reads: its config."""

    def __init__(self, config: Any) -> None:
        self.config = config
