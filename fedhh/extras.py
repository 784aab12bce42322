"""The optional parts of fedhh and the extra of the package that installs each.

The core install (numpy, numba, scipy, xxhash, grpcio, protobuf) runs ``fedhh simulate``, the
mechanisms, TEMPO and the device SDK (:mod:`fedhh.clients.reporter`). The rest comes with an
extra (``pip install 'fedhh[server]'``):

* ``server``: the coordinator and party services (gRPC health and reflection, Prometheus
  metrics, JSON logs), ``fedhh deploy local`` (its throwaway certificates) and process control;
* ``flower``: the Flower ServerApp and ClientApp and ``fedhh flower run`` (flwr 1.42);
* ``simulation``: ``fedhh simulate --engine flower`` (flwr with Ray);
* ``accounting``: Google's ``dp_accounting``, for the optimal composition of a user's runs
  towards the coordinator (:mod:`fedhh.core.accounting`); without it the figure is basic
  composition, and says so;
* ``plots``, ``torch``, ``integrations`` (TRL, verl): see pyproject.toml.

A command checks its extra before it does anything (:func:`require`), so a missing one is one
error line naming what to install, never a traceback halfway through.
"""

from __future__ import annotations

import importlib.util

from fedhh.errors import MissingExtra

# The modules each extra brings that fedhh imports (top-level names).
MODULES: dict[str, tuple[str, ...]] = {
    "server": (
        "grpc_health",
        "grpc_reflection",
        "cryptography",
        "psutil",
        "prometheus_client",
        "pythonjsonlogger",
    ),
    "flower": ("flwr", "psutil"),
    "simulation": ("flwr", "ray", "psutil"),
    "plots": ("matplotlib",),
    "torch": ("torch",),
    "accounting": ("dp_accounting",),
}


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here."""
    return [m for m in MODULES[extra] if not _importable(m)]


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtra` naming ``what`` needs and the install line, unless every
    module of ``extra`` is importable."""
    absent = missing(extra)
    if absent:
        raise MissingExtra(
            f"{what} needs the '{extra}' extra ({', '.join(absent)} not installed): "
            f"pip install 'fedhh[{extra}]'"
        )
