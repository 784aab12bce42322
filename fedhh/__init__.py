"""fedhh: federated heavy-hitter analytics under ε-local differential privacy.

Layers (dependencies point downward only): transports (``fedhh.server``, ``fedhh.clients``,
``fedhh.engine``) → ``fedhh.protocol`` → ``fedhh.mechanisms`` → core (``fedhh.oracles``,
``fedhh.trie``, ``fedhh.codec``, ``fedhh.metrics``, ``fedhh.datasets``, ``fedhh.tempo``); the
wire contract (``protos/fedhh/v1``) is below them all. See docs/architecture.md.
"""

__version__ = "0.1.0"
