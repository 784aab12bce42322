"""TEMPO advantages in TRL's GRPO training: :class:`TempoGRPOTrainer` (TRL 1.16).

TRL's ``GRPOTrainer`` gathers the rewards of every process's completions, normalises them per
group (a prompt's ``num_generations`` completions, contiguous rows) and only then keeps each
process's slice. TEMPO needs whole groups too, and their token ids: this trainer gathers the
completion ids and masks across processes, computes the per-token TEMPO advantages [B, T] of the
whole batch with :func:`fedhh.tempo.tempo_advantages_trl` (the same ``scale_rewards``, ε = 1e-4,
unscorable completions and reward weights as TRL's GRPO), and keeps this process's rows. TRL's
loss accepts [B, T] advantages (it unsqueezes only 1-D ones).

Logging: the completions table's "advantage" column holds the mean TEMPO advantage over each
completion's tokens (TRL's GRPO value is replaced), and the metrics gain ``tempo/advantage_mean``,
``tempo/advantage_std`` (over all completion tokens) and ``tempo/td_token_frac`` (the share of
completion tokens where the TD term moved the advantage away from GRPO's).

Usage::

    from fedhh.integrations.trl import TempoGRPOTrainer

    trainer = TempoGRPOTrainer(model, reward_funcs=..., args=GRPOConfig(...), td_coef=1.0, ...)
    trainer.train()
"""

from __future__ import annotations

import math
from typing import Any

import torch
from trl import GRPOTrainer

from fedhh.errors import ParameterError
from fedhh.tempo import tempo_advantages_trl

__all__ = ["TempoGRPOTrainer"]


class TempoGRPOTrainer(GRPOTrainer):
    """TRL's ``GRPOTrainer`` with per-token TEMPO advantages (``td_coef=0`` gives TRL's GRPO).

    Takes ``GRPOTrainer``'s arguments plus ``td_coef`` (default 1.0, the weight of the TD term).
    ``scale_rewards`` ("group"/True, "batch", "none"/False) comes from the ``GRPOConfig``; the
    rewards are summed with ``reward_weights`` (``multi_objective_aggregation`` must be TRL's
    default "sum_then_normalize").
    """

    def __init__(self, *args: Any, td_coef: float = 1.0, **kwargs: Any) -> None:
        td = float(td_coef)
        if not math.isfinite(td):
            raise ParameterError(f"td_coef must be finite, got {td_coef!r}")
        super().__init__(*args, **kwargs)
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ParameterError(
                "TempoGRPOTrainer needs multi_objective_aggregation='sum_then_normalize', got "
                f"{self.multi_objective_aggregation!r}"
            )
        self.td_coef = td
        self._gathered_rewards: torch.Tensor | None = None

    def _calculate_rewards(
        self, inputs: Any, prompts: Any, completions: Any, completion_ids_list: Any
    ) -> torch.Tensor:
        """TRL's rewards per function, gathered over all processes; kept for the advantages."""
        rewards_per_func: torch.Tensor = super()._calculate_rewards(
            inputs, prompts, completions, completion_ids_list
        )
        self._gathered_rewards = rewards_per_func
        return rewards_per_func

    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        """TRL's batch with ``advantages`` [B_local, T] from TEMPO on the gathered batch."""
        self._gathered_rewards = None
        out: dict[str, Any] = super()._generate_and_score_completions(inputs)
        rewards_per_func = self._gathered_rewards
        self._gathered_rewards = None
        if rewards_per_func is None:
            raise RuntimeError("GRPOTrainer did not compute rewards through _calculate_rewards")
        mode = "train" if self.model.training else "eval"
        k = self.num_generations if mode == "train" else self.num_generations_eval

        # every process's completions, padded to one width, in process order (as the rewards)
        local_ids, local_mask = out["completion_ids"], out["completion_mask"]
        ids = self.accelerator.gather(
            self.accelerator.pad_across_processes(local_ids, dim=1, pad_index=0)
        )
        mask = self.accelerator.gather(
            self.accelerator.pad_across_processes(local_mask, dim=1, pad_index=0)
        )
        weights = self.reward_weights.to(rewards_per_func.device).unsqueeze(0)
        rewards = (rewards_per_func * weights).nansum(dim=1)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan  # unscorable, as in TRL

        if k > 1:
            advantages = tempo_advantages_trl(
                rewards, mask, ids, k, scale_rewards=self.scale_rewards, td_coef=self.td_coef
            )
            grpo = tempo_advantages_trl(
                rewards, mask, ids, k, scale_rewards=self.scale_rewards, td_coef=0.0
            )
        else:  # TRL: a group of one is its own baseline (only in evaluation)
            advantages = grpo = torch.zeros(mask.shape, dtype=rewards.dtype, device=rewards.device)
        advantages = advantages.to(local_ids.device)

        n_local = local_ids.shape[0]
        rows = slice(
            self.accelerator.process_index * n_local, (self.accelerator.process_index + 1) * n_local
        )
        out["advantages"] = advantages[rows, : local_ids.shape[1]].contiguous()
        self._log_tempo(advantages, grpo.to(advantages.device), mask.to(advantages.device), mode)
        return out

    def _log_tempo(
        self, advantages: torch.Tensor, grpo: torch.Tensor, mask: torch.Tensor, mode: str
    ) -> None:
        """TEMPO's advantages in TRL's completions log (in place of GRPO's) and metrics."""
        m = mask.bool()
        tokens = m.sum(dim=1)
        per_completion = (advantages * m).sum(dim=1) / tokens.clamp(min=1)
        # a deque to which TRL appended GRPO's value for each gathered completion
        logged: Any = self._logs["advantages"]
        for _ in range(min(len(logged), per_completion.shape[0])):
            logged.pop()
        logged.extend(per_completion.tolist())
        values = advantages[m].double()
        if values.numel():
            self._metrics[mode]["tempo/advantage_mean"].append(values.mean().item())
            std = values.std().item() if values.numel() > 1 else 0.0
            self._metrics[mode]["tempo/advantage_std"].append(std)
            moved = (advantages != grpo) & m
            self._metrics[mode]["tempo/td_token_frac"].append(moved.sum().item() / values.numel())
