"""TempoGRPOTrainer in TRL 1.16, two real training steps (`make integration`; part of `make test`).

The model is a 2-layer Llama with an 8-token vocabulary and the tokenizer a word-level one, both
built here from a config: nothing is downloaded (HF_HUB_OFFLINE=1). Each generation batch is
recorded as TRL's own GRPOTrainer scored it (its completions, gathered rewards and GRPO
advantages) and as TempoGRPOTrainer returned it.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl", reason="TRL is not installed: run `make integration`")
transformers = pytest.importorskip("transformers")
pd = pytest.importorskip("pandas")

from fedhh.errors import ParameterError  # noqa: E402
from fedhh.integrations.trl import TempoGRPOTrainer  # noqa: E402
from fedhh.tempo import tempo_advantages_trl  # noqa: E402

pytestmark = pytest.mark.integration

WORDS = ["<pad>", "<eos>", "a", "b", "c", "d", "e", "f"]
GENERATIONS = 4
# TRL's own scoring, recorded by wrapping these (the originals, whatever a test patched)
TRL_GENERATE_AND_SCORE = trl.GRPOTrainer._generate_and_score_completions
TRL_CALCULATE_REWARDS = trl.GRPOTrainer._calculate_rewards


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


def tiny_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>"
    )


def tiny_model() -> Any:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(WORDS),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )
    return transformers.LlamaForCausalLM(config)


def reward_a(completions: list[str], **kwargs: Any) -> list[float | None]:
    words = [c.split() for c in completions]
    return [float(w.count("a")) - 0.5 * w.count("b") for w in words]


def reward_len(completions: list[str], **kwargs: Any) -> list[float | None]:
    return [None if not c.split() else 0.1 * len(c.split()) for c in completions]  # None: unscored


class Recorder:
    """Records what TRL's GRPOTrainer computed for each generation batch, before TEMPO."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batches: list[dict[str, Any]] = []
        grpo = trl.GRPOTrainer
        generate, rewards = TRL_GENERATE_AND_SCORE, TRL_CALCULATE_REWARDS

        def calculate_rewards(trainer: Any, *args: Any) -> Any:
            out = rewards(trainer, *args)
            self.batches.append({"rewards_per_func": out.clone()})
            return out

        def generate_and_score(trainer: Any, inputs: Any) -> Any:
            out = generate(trainer, inputs)
            self.batches[-1].update(
                trl_advantages=out["advantages"].clone(),
                completion_ids=out["completion_ids"].clone(),
                completion_mask=out["completion_mask"].clone(),
                weights=trainer.reward_weights.clone(),
            )
            return out

        monkeypatch.setattr(grpo, "_calculate_rewards", calculate_rewards)
        monkeypatch.setattr(grpo, "_generate_and_score_completions", generate_and_score)

    def rewards(self, batch: dict[str, Any]) -> Any:
        """The per-completion rewards as TRL sums them (NaN where no function scored)."""
        per_func = batch["rewards_per_func"]
        total = (per_func * batch["weights"].unsqueeze(0)).nansum(dim=1)
        total[torch.isnan(per_func).all(dim=1)] = torch.nan
        return total


def train(
    trainer_cls: type,
    out_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    scale_rewards: Any = "group",
    reward_funcs: Any = None,
    **kwargs: Any,
) -> tuple[Any, Recorder, list[Any]]:
    """Two training steps; returns the trainer, the recorded batches and TEMPO's outputs."""
    from datasets import Dataset

    recorder = Recorder(monkeypatch)
    outputs: list[Any] = []
    if trainer_cls is TempoGRPOTrainer:

        class Recording(TempoGRPOTrainer):  # type: ignore[misc]
            def _generate_and_score_completions(self, inputs: Any) -> Any:
                out = super()._generate_and_score_completions(inputs)
                outputs.append(out["advantages"].clone())
                return out

        trainer_cls = Recording
    args = trl.GRPOConfig(
        output_dir=str(out_dir),
        per_device_train_batch_size=8,
        num_generations=GENERATIONS,
        max_completion_length=6,
        max_steps=2,
        logging_steps=1,
        learning_rate=1e-2,
        seed=0,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        log_completions=True,
        num_completions_to_print=0,
        scale_rewards=scale_rewards,
        disable_tqdm=True,
    )
    dataset = Dataset.from_dict({"prompt": ["a b", "c d", "e f", "b a"] * 4})
    trainer = trainer_cls(
        tiny_model(),
        reward_funcs=reward_funcs or [reward_a],
        args=args,
        train_dataset=dataset,
        processing_class=tiny_tokenizer(),
        **kwargs,
    )
    trainer.train()
    return trainer, recorder, outputs


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none", True, False])
def test_td_coef_zero_equals_trls_grpo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scale_rewards: Any
) -> None:
    trainer, rec, outputs = train(
        TempoGRPOTrainer, tmp_path, monkeypatch, scale_rewards, [reward_a, reward_len], td_coef=0.0
    )
    assert trainer.state.global_step == 2 and len(outputs) == len(rec.batches) == 2
    for batch, ours in zip(rec.batches, outputs, strict=True):
        mask = batch["completion_mask"]
        assert ours.shape == mask.shape and ours.dtype == batch["trl_advantages"].dtype
        expected = batch["trl_advantages"].unsqueeze(1) * mask
        torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6)


def test_same_training_as_trls_grpo_trainer_at_td_coef_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, plain_rec, _ = train(trl.GRPOTrainer, tmp_path / "grpo", monkeypatch)
    tempo, rec, _ = train(TempoGRPOTrainer, tmp_path / "tempo", monkeypatch, td_coef=0.0)
    for a, b in zip(plain_rec.batches, rec.batches, strict=True):
        assert torch.equal(a["completion_ids"], b["completion_ids"])  # same samples
    for p, q in zip(plain.model.parameters(), tempo.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    loss = [h["loss"] for h in plain.state.log_history if "loss" in h]
    assert loss == pytest.approx([h["loss"] for h in tempo.state.log_history if "loss" in h])


def test_tempo_advantages_are_used_and_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer, rec, outputs = train(TempoGRPOTrainer, tmp_path, monkeypatch, td_coef=1.0)
    logs = [h for h in trainer.state.log_history if "tempo/advantage_mean" in h]
    tables = sorted(glob.glob(os.path.join(tmp_path, "completions", "completions_*.parquet")))
    assert len(logs) == len(tables) == len(outputs) == 2
    moved = 0
    for batch, ours, log, table in zip(rec.batches, outputs, logs, tables, strict=True):
        ids, mask = batch["completion_ids"], batch["completion_mask"]
        expected = tempo_advantages_trl(rec.rewards(batch), mask, ids, GENERATIONS, td_coef=1.0)
        torch.testing.assert_close(ours, expected, rtol=0, atol=0)
        grpo = batch["trl_advantages"].unsqueeze(1) * mask
        differs = (ours != grpo) & mask.bool()
        moved += int(differs.sum())
        # the completions table shows TEMPO's advantages (mean over each completion's tokens)
        m = mask.double()
        mean = ((ours.double() * m).sum(1) / m.sum(1).clamp(min=1)).numpy()
        logged = pd.read_parquet(table)["advantage"].to_numpy()
        np.testing.assert_allclose(logged, mean, rtol=1e-6, atol=1e-7)
        # and the metrics too
        values = ours[mask.bool()].double()
        assert log["tempo/advantage_mean"] == pytest.approx(values.mean().item(), abs=1e-9)
        assert log["tempo/advantage_std"] == pytest.approx(values.std().item(), abs=1e-9)
        frac = differs.sum().item() / mask.sum().item()
        assert log["tempo/td_token_frac"] == pytest.approx(frac)
    assert moved > 0  # the trees branched with different values: TEMPO is not GRPO here


def test_rejects_what_tempo_cannot_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ParameterError, match="td_coef"):
        TempoGRPOTrainer(tiny_model(), reward_funcs=[reward_a], td_coef=float("inf"))
    args = trl.GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=GENERATIONS,
        use_cpu=True,
        report_to="none",
        multi_objective_aggregation="normalize_then_sum",
    )
    from datasets import Dataset

    with pytest.raises(ParameterError, match="sum_then_normalize"):
        TempoGRPOTrainer(
            tiny_model(),
            reward_funcs=[reward_a],
            args=args,
            train_dataset=Dataset.from_dict({"prompt": ["a b"] * 4}),
            processing_class=tiny_tokenizer(),
        )


def test_readme_snippet_trains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's TRL snippet, run as written, with a small run's GRPOConfig settings added."""
    from datasets import Dataset

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### TRL\n", 1)[1].split("\n### ", 1)[0]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "TempoGRPOTrainer(" in snippet and "trainer.train()" in snippet
    real_config = trl.GRPOConfig
    small_run = {
        "output_dir": str(tmp_path),
        "per_device_train_batch_size": 8,
        "max_completion_length": 6,
        "max_steps": 2,
        "logging_steps": 1,
        "seed": 0,
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
    }
    monkeypatch.setattr(trl, "GRPOConfig", lambda **kw: real_config(**{**kw, **small_run}))
    namespace: dict[str, Any] = {
        "model": tiny_model(),
        "tokenizer": tiny_tokenizer(),
        "reward_funcs": [reward_a],
        "dataset": Dataset.from_dict({"prompt": ["a b", "c d", "e f", "b a"] * 4}),
    }
    exec(compile(snippet, "README.md", "exec"), namespace)
    trainer = namespace["trainer"]
    assert isinstance(trainer, TempoGRPOTrainer) and trainer.state.global_step == 2
    assert any("tempo/td_token_frac" in h for h in trainer.state.log_history)
