"""fedhh: federated heavy-hitter analytics under ε-local differential privacy.

Layers (dependencies point downward only): the command line (``fedhh.cli``) and operations
(``fedhh.ops``) on top; transports (``fedhh.server``, ``fedhh.clients``, ``fedhh.flower``,
``fedhh.run``) → ``fedhh.protocol`` → ``fedhh.mechanisms`` → ``fedhh.oracles``, ``fedhh.datasets``,
``fedhh.tempo`` → ``fedhh.core`` (codes, items, trie, metrics); the wire contract
(``protos/fedhh/v1``) is below them all. See docs/architecture.md.
"""

__version__ = "0.1.0"
