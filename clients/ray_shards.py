"""Ingestion shards as Ray actors (``fedhh party serve --ingest-engine ray``): each actor runs
the same :class:`~fedhh.clients.shard.ShardNode` as a child-process shard (its own ledger and
report endpoint), and the agent drives it with the same commands, as actor method calls.

The agent connects to the Ray cluster named by ``RAY_ADDRESS`` if set, else starts one on this
machine listening on 127.0.0.1. The actors are placed on the agent's node: the shards' gate is
a file of that machine (docs/deployment.md says what shards on several machines need). An actor
that dies is started again by the agent's :class:`~fedhh.clients.shards.ShardSet`; the actors
end with the agent's Ray connection.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from fedhh.clients.shard import START_WAIT, ShardConfig, ShardDown, ShardNode, reraise
from fedhh.errors import FedHHError, StorageError


class ShardActor:
    """The body of a shard actor (made a Ray actor class by :func:`_actor_class`)."""

    def __init__(self, cfg: ShardConfig) -> None:
        self.node: ShardNode | None = None
        self.error: tuple[str, str] | None = None
        try:
            self.node = ShardNode(cfg)
        except FedHHError as exc:  # said by port(): an actor that raises here just dies
            self.error = (type(exc).__name__, str(exc))

    def port(self) -> tuple[int, tuple[str, str] | None]:
        return (self.node.port if self.node is not None else 0), self.error

    def call(self, name: str, args: tuple[Any, ...]) -> Any:
        assert self.node is not None
        return getattr(self.node, name)(*args)

    def watch(self) -> None:
        """Never returns: the agent learns of the actor's death when this call fails."""
        threading.Event().wait()

    def stop(self) -> None:
        if self.node is not None:
            self.node.stop()


_ACTOR: Any = None


def _actor_class() -> Any:
    global _ACTOR
    if _ACTOR is None:
        import ray

        options: dict[str, Any] = {"max_concurrency": 4, "num_cpus": 0}  # (threaded: its watch)
        _ACTOR = ray.remote(**options)(ShardActor)
    return _ACTOR


def ensure_ray(cpus: int) -> None:
    """Connect to Ray (``RAY_ADDRESS``), or start it here on 127.0.0.1 with ``cpus`` CPUs."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(
            num_cpus=cpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
        )


class RayShard:
    """A shard in a Ray actor on the agent's node."""

    def __init__(self, cfg: ShardConfig) -> None:
        self.cfg = cfg
        self.ready = threading.Event()
        self.lock = threading.Lock()
        self.actor: Any = None
        self._watch: Any = None

    def spawn(self) -> int:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = ray.get_runtime_context().get_node_id()
        actor = (
            _actor_class()
            .options(scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False))
            .remote(self.cfg)
        )
        try:
            port, error = ray.get(actor.port.remote(), timeout=START_WAIT)
        except (ray.exceptions.RayError, TimeoutError) as exc:
            ray.kill(actor)
            raise StorageError(f"ingestion shard {self.cfg.index} did not start: {exc}") from None
        if error is not None:
            ray.kill(actor)
            reraise(*error)
        with self.lock:
            self.actor, self._watch = actor, actor.watch.remote()
        return int(port)

    def alive(self) -> bool:
        import ray

        if self._watch is None:
            return False
        done, _ = ray.wait([self._watch], timeout=0)
        return not done

    def call(self, name: str, *args: Any) -> Any:
        import ray

        with self.lock:
            actor = self.actor
            if actor is None:
                raise ShardDown(f"ingestion shard {self.cfg.index} is not running")
            try:
                return ray.get(actor.call.remote(name, args))
            except FedHHError:  # (Ray's task error is also an instance of the cause's class)
                raise
            except ray.exceptions.RayError:
                ray.kill(actor)
                self.ready.clear()
                raise ShardDown(f"ingestion shard {self.cfg.index} stopped") from None

    def pid(self) -> int:
        return int(self.call("pid"))

    def stop(self) -> None:
        import ray

        with self.lock:
            actor, self.actor, self._watch = self.actor, None, None
        if actor is None:
            return
        try:
            ray.get(actor.stop.remote(), timeout=15)
        except (ray.exceptions.RayError, TimeoutError):
            pass
        ray.kill(actor)
