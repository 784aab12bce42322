"""TEMPO as a verl advantage estimator: ``algorithm.adv_estimator=tempo`` (verl 0.9.x).

verl computes advantages in its Ray TaskRunner, not in the driver, so this module has to be
imported there before the trainer starts. verl imports every module named in the environment
variable ``VERL_USE_EXTERNAL_MODULES`` whenever ``verl`` itself is imported, and the config hands
environment variables to every Ray process (the TaskRunner and the workers)::

    python -m verl.trainer.main_ppo ... \\
        algorithm.adv_estimator=tempo \\
        +algorithm.tempo.td_coef=1.0 \\
        +ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=fedhh.integrations.verl

Importing this module

1. registers :func:`compute_tempo_outcome_advantage` as ``"tempo"`` in verl's registry of
   advantage estimators (``verl.trainer.ppo.core_algos.register_adv_est``);
2. hands it the response token ids, which verl 0.9.1 does not pass to registered estimators (it
   passes ``token_level_rewards``, ``response_mask``, ``index`` = the uids, ``config`` = the
   ``algorithm`` config, and ``reward_baselines`` when the batch has them):

   * legacy trainer (``trainer.use_v1=false``): ``ray_trainer.compute_advantage(data, ...)`` has
     them in ``data.batch["responses"]``;
   * v1 trainer (the default): ``PPOTrainer._compute_advantage(batch, metrics)`` reads only some
     fields from TransferQueue, not the responses, so they are read for the same keys and padded
     like the other fields.

   Each of these two functions is wrapped: the wrapper runs verl's function unchanged and only makes
   the token ids of the batch at hand visible to the estimator (a context variable) during the
   call. The wrappers are installed when verl imports the trainer modules (or at once if it has).

Options (verl's ``algorithm`` config): ``algorithm.tempo.td_coef`` (default 1.0; 0 gives GRPO),
``algorithm.tempo.epsilon`` (default 1e-6) and verl's own ``algorithm.norm_adv_by_std_in_grpo``
(default True). The advantages are :func:`fedhh.tempo.tempo_advantages` (docs/tempo.md).
"""

from __future__ import annotations

import contextvars
import functools
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

from fedhh.errors import DataError, ParameterError
from fedhh.tempo import tempo_advantages

__all__ = [
    "ENV_VAR",
    "ESTIMATOR",
    "compute_tempo_outcome_advantage",
    "install",
    "tempo_options",
]

ESTIMATOR = "tempo"  # the value of algorithm.adv_estimator
ENV_VAR = "VERL_USE_EXTERNAL_MODULES"  # verl imports the modules it names on `import verl`
DEFAULTS = {"td_coef": 1.0, "epsilon": 1e-6}

_CORE_ALGOS = "verl.trainer.ppo.core_algos"
_RAY_TRAINER = "verl.trainer.ppo.ray_trainer"
_TRAINER_BASE = "verl.trainer.ppo.v1.trainer_base"
_MARK = "__fedhh_tempo_wrapper__"

# the response token ids [bs, L] of the batch whose advantages verl is computing
_RESPONSES: contextvars.ContextVar[Any | None] = contextvars.ContextVar(
    "fedhh_tempo_verl_responses", default=None
)


# ---------------------------------------------------------------------------- the estimator
def _get(obj: Any, key: str, default: Any) -> Any:
    """``obj[key]`` for a dict, DictConfig or verl dataclass config; ``default`` if absent."""
    if obj is None:
        return default
    if isinstance(obj, Mapping) or callable(getattr(obj, "get", None)):
        return obj.get(key, default)
    return getattr(obj, key, default)


def tempo_options(config: Any) -> dict[str, Any]:
    """``td_coef``, ``epsilon`` and ``norm_adv_by_std_in_grpo`` from verl's ``algorithm`` config."""
    tempo = _get(config, "tempo", None)
    if tempo is None:
        tempo = {}
    keys = set(tempo.keys()) if isinstance(tempo, Mapping) else set()
    unknown = keys - set(DEFAULTS)
    if unknown:
        raise ParameterError(
            f"unknown option(s) algorithm.tempo.{', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(DEFAULTS))}"
        )
    return {
        "td_coef": float(_get(tempo, "td_coef", DEFAULTS["td_coef"])),
        "epsilon": float(_get(tempo, "epsilon", DEFAULTS["epsilon"])),
        "norm_adv_by_std_in_grpo": bool(_get(config, "norm_adv_by_std_in_grpo", True)),
    }


def compute_tempo_outcome_advantage(
    token_level_rewards: Any,
    response_mask: Any,
    index: Any = None,
    config: Any = None,
    responses: Any = None,
    **kwargs: Any,
) -> tuple[Any, Any]:
    """TEMPO advantages and returns [bs, L], called by verl as a registered estimator.

    verl calls it with keywords: ``token_level_rewards`` and ``response_mask`` [bs, L], ``index``
    (the uids of ``non_tensor_batch["uid"]``), ``config`` (``algorithm``) and maybe
    ``reward_baselines`` (not used). ``responses`` [bs, L] defaults to the token ids of the batch
    being processed (see the module docstring).
    """
    if index is None:
        raise DataError(
            "TEMPO groups responses by prompt: the batch has no non_tensor_batch['uid']"
        )
    if responses is None:
        responses = _RESPONSES.get()
    if responses is None:
        raise DataError(
            "TEMPO needs the response token ids, which verl does not pass to registered "
            "estimators: import fedhh.integrations.verl in the process that runs the trainer "
            f"(set {ENV_VAR}=fedhh.integrations.verl in the Ray runtime_env, see its docstring)"
        )
    if tuple(responses.shape) != tuple(response_mask.shape):
        raise DataError(
            f"responses have shape {tuple(responses.shape)}, response_mask "
            f"{tuple(response_mask.shape)}"
        )
    return tempo_advantages(
        token_level_rewards, response_mask, index, responses, **tempo_options(config)
    )


# ---------------------------------------------------------------------------- hooks into verl
def _estimator_name(value: Any) -> str:
    return str(getattr(value, "value", value))


def _wrap_compute_advantage(original: Callable[..., Any]) -> Callable[..., Any]:
    """``ray_trainer.compute_advantage``, showing ``data.batch["responses"]`` to the estimator."""
    if getattr(original, _MARK, False):
        return original

    @functools.wraps(original)
    def compute_advantage(data: Any, *args: Any, **kwargs: Any) -> Any:
        batch = getattr(data, "batch", None)
        if batch is None or "responses" not in batch.keys():
            return original(data, *args, **kwargs)
        token = _RESPONSES.set(batch["responses"])
        try:
            return original(data, *args, **kwargs)
        finally:
            _RESPONSES.reset(token)

    setattr(compute_advantage, _MARK, True)
    return compute_advantage


def _transfer_queue_responses(keys: Sequence[str], partition_id: str) -> Any:
    """The response token ids of ``keys`` from TransferQueue, padded as verl pads its fields."""
    import transfer_queue as tq

    fields = tq.kv_batch_get(
        keys=list(keys), partition_id=partition_id, select_fields=["responses"]
    )
    return fields.to_padded_tensor()["responses"]


def _wrap_v1_compute_advantage(original: Callable[..., Any]) -> Callable[..., Any]:
    """``PPOTrainer._compute_advantage`` (v1), reading the batch's responses for the estimator."""
    if getattr(original, _MARK, False):
        return original

    @functools.wraps(original)
    def _compute_advantage(self: Any, batch: Any, metrics: dict[str, Any]) -> Any:
        if _estimator_name(self.config.algorithm.adv_estimator) != ESTIMATOR:
            return original(self, batch, metrics)
        token = _RESPONSES.set(_transfer_queue_responses(batch.keys, batch.partition_id))
        try:
            return original(self, batch, metrics)
        finally:
            _RESPONSES.reset(token)

    setattr(_compute_advantage, _MARK, True)
    return _compute_advantage


def _register(core_algos: Any) -> None:
    current = core_algos.ADV_ESTIMATOR_REGISTRY.get(ESTIMATOR)
    if (
        current is None
        or getattr(current, "__qualname__", None) != "compute_tempo_outcome_advantage"
    ):
        core_algos.register_adv_est(ESTIMATOR)(compute_tempo_outcome_advantage)
    else:  # this module imported anew (e.g. reloaded): keep one registration, the newest
        core_algos.ADV_ESTIMATOR_REGISTRY[ESTIMATOR] = compute_tempo_outcome_advantage


def _patch_ray_trainer(module: Any) -> None:
    module.compute_advantage = _wrap_compute_advantage(module.compute_advantage)


def _patch_trainer_base(module: Any) -> None:
    cls = module.PPOTrainer
    cls._compute_advantage = _wrap_v1_compute_advantage(cls._compute_advantage)


_PATCHES: dict[str, Callable[[ModuleType], None]] = {
    _CORE_ALGOS: _register,
    _RAY_TRAINER: _patch_ray_trainer,
    _TRAINER_BASE: _patch_trainer_base,
}


class _PatchingLoader(importlib.abc.Loader):
    """Runs a module's own loader, then the patch for that module."""

    def __init__(self, loader: importlib.abc.Loader, patch: Callable[[ModuleType], None]) -> None:
        self._loader = loader
        self._patch = patch

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        self._patch(module)

    def __getattr__(self, name: str) -> Any:  # get_source, get_resource_reader, ...
        return getattr(self._loader, name)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Patches verl's modules right after they are imported (this module may come first)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        patch = _PATCHES.get(fullname)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or isinstance(finder, _AfterImport):
                continue
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec is not None else None
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PatchingLoader(spec.loader, patch)
                return spec
        return None


def install() -> None:
    """Register the estimator and install the wrappers (now, or when verl imports the modules).

    Runs on import of this module; calling it again changes nothing.
    """
    if not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport())
    for name, patch in _PATCHES.items():
        module = sys.modules.get(name)
        if module is not None:
            patch(module)


install()
