"""Data-parallel training seam: the one place that knows about tf.distribute / keras.distribution.

- TensorFlow backend: a cluster (``TF_CONFIG``, or the Slurm step environment turned into
  one) -> ``tf.distribute.MultiWorkerMirroredStrategy``; more than one visible GPU ->
  ``tf.distribute.MirroredStrategy``; otherwise the default strategy. Build and compile
  the model inside ``plan.scope()``.
- JAX backend: several processes (``KERAS_DISTRIBUTION_*`` variables, or a Slurm step) ->
  ``keras.distribution.initialize`` (``jax.distributed``; CPU collectives through Gloo);
  more than one device overall -> ``keras.distribution.DataParallel`` (global).
- Other backends / one device: nothing.

In every case ``--batchsize`` is the *global* batch: it is split evenly across all
replicas (it must be a multiple of their number) and every process makes only its own
shards of each batch (:meth:`DistributionPlan.input_shards`). Process 0 (the chief) alone
writes the run folder; at start it tells the others where to resume and hands them its
weights (:meth:`DistributionPlan.broadcast`), so the other machines need the data files
but not the run folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from typing import Any, Callable, Iterator

import keras
import numpy as np

from prnet_keras.errors import ClusterError, InputError

DEFAULT_PORT = 12345  # first port of the TF_CONFIG made from a Slurm step (+ the task's rank on its node)


@dataclasses.dataclass
class DistributionPlan:
    """How training is spread.

    ``kind``: "single" | "mirrored" | "multi_worker" | "jax_data_parallel". ``replicas``:
    devices sharing a global batch (all processes); ``workers`` / ``worker_index``:
    processes and this one's rank; ``local_replicas``: replicas in this process;
    ``scope``: context manager for model + compile; ``strategy``: the tf.distribute
    strategy (TensorFlow) or None.
    """

    kind: str
    replicas: int
    scope: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    detail: str = ""
    workers: int = 1
    worker_index: int = 0
    local_replicas: int = 1
    strategy: Any = None
    distribution: Any = None  # keras.distribution (JAX), active inside activate()

    @property
    def is_chief(self) -> bool:
        return self.worker_index == 0

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        """The whole run (model, fit): sets the global ``keras.distribution`` (JAX) and
        puts the previous one back after."""
        if self.distribution is None:
            yield
            return
        previous = keras.distribution.distribution()
        keras.distribution.set_distribution(self.distribution)
        try:
            yield
        finally:
            keras.distribution.set_distribution(previous)


    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "replicas": self.replicas, "workers": self.workers, "detail": self.detail}

    def input_shards(self) -> tuple[tuple[int, ...], int]:
        """(this process' shards, shards per global batch).

        tf.distribute feeds every replica its own dataset element: one shard per replica,
        this worker's in order. JAX takes one per-process batch and splits it over the
        local devices itself: one shard per process.
        """
        if self.kind.startswith("jax"):
            return (self.worker_index,), self.workers
        first = self.worker_index * self.local_replicas
        return tuple(range(first, first + self.local_replicas)), self.replicas

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size % self.replicas:
            raise InputError(f"--batchsize {batch_size}: the global batch is split evenly across "
                             f"{self.replicas} replicas; give a multiple of {self.replicas}")

    @contextlib.contextmanager
    def chief_only(self) -> Iterator[None]:
        """Work only the chief does (saving): Keras makes throw-away variables meanwhile, which
        under the global JAX distribution would be cross-process collectives (the others
        never join). TensorFlow: ``fit`` runs outside the strategy scope already."""
        if self.distribution is None:
            yield
            return
        keras.distribution.set_distribution(None)
        try:
            yield
        finally:
            keras.distribution.set_distribution(self.distribution)

    @contextlib.contextmanager
    def peer_failures(self) -> Iterator[None]:
        """Turn "a peer process died / is unreachable" into one :class:`ClusterError`.

        With several processes a killed peer makes the collectives of the others fail
        (within seconds: the connection is refused); the run folder still holds the last
        completed epoch, so the message says how to continue.
        """
        if self.workers == 1:
            yield
            return
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - only the backends' peer-failure errors are translated
            if not _is_peer_failure(exc):
                raise
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ClusterError(f"process {self.worker_index} of {self.workers}: another training process stopped or "
                               f"cannot be reached ({type(exc).__name__}: {first}); start every process again "
                               "with the same command to resume from the last completed epoch") from None

    def broadcast(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """The chief's ``arrays`` on every process (a no-op with one process)."""
        if self.workers == 1:
            return [np.asarray(a) for a in arrays]
        if self.strategy is not None:
            return _tf_broadcast(self.strategy, self.is_chief, arrays)
        from jax.experimental import multihost_utils

        return [np.asarray(a) for a in multihost_utils.broadcast_one_to_all(list(arrays), is_source=self.is_chief)]

    def broadcast_variables(self, variables: list[Any]) -> None:
        """Assign the chief's values to ``variables`` (Keras variables) on every process."""
        if self.workers == 1 or not variables:
            return
        values = self.broadcast([_local_value(v) for v in variables])
        for v, value in zip(variables, values):
            v.assign(value)


def _is_peer_failure(exc: BaseException) -> bool:
    name = type(exc).__name__
    if name in ("UnavailableError", "DeadlineExceededError", "AbortedError"):
        return True  # tf.errors: a peer's server is gone or timed out
    text = str(exc)
    if name in ("InternalError", "CancelledError", "UnknownError"):
        return "Collective ops is aborted" in text or "connect" in text
    if name in ("XlaRuntimeError", "JaxRuntimeError"):  # JAX: Gloo / coordination service
        return any(s in text for s in ("Gloo", "gloo", "coordination", "heartbeat", "Connection"))
    return False


def _local_value(v: Any) -> np.ndarray:
    """This process' copy of a (replicated) Keras variable."""
    value = v.value
    if hasattr(value, "numpy"):  # TensorFlow, also a MirroredVariable (its first local copy)
        return np.asarray(value.numpy())
    return np.asarray(value)  # JAX: replicated over all processes, every process holds the whole value


def _tf_broadcast(strategy: Any, is_chief: bool, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """All-reduce (sum) where only the chief's first replica contributes: one collective per dtype."""
    import tensorflow as tf

    arrays = [np.asarray(a) for a in arrays]
    out: list[np.ndarray | None] = [None] * len(arrays)
    groups: dict[str, list[int]] = {}
    for i, a in enumerate(arrays):  # integers travel as float64 (exact below 2**53)
        groups.setdefault("float32" if a.dtype == np.float32 else "float64", []).append(i)
    for dtype, idx in sorted(groups.items()):
        flat = np.concatenate([arrays[i].astype(dtype).ravel() for i in idx]) if idx else np.zeros(0, dtype)

        calls: list[int] = []

        def contribution(ctx: Any, flat: np.ndarray = flat, calls: list = calls) -> Any:
            first = is_chief and not calls  # called once per local replica, in order
            calls.append(ctx.replica_id_in_sync_group)
            return tf.constant(flat if first else np.zeros_like(flat))

        per_replica = strategy.experimental_distribute_values_from_function(contribution)
        total = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy()
        pos = 0
        for i in idx:
            n = arrays[i].size
            out[i] = total[pos:pos + n].reshape(arrays[i].shape).astype(arrays[i].dtype)
            pos += n
    return out  # type: ignore[return-value]


# ---- cluster discovery ---------------------------------------------------------------------
def expand_hostlist(hostlist: str) -> list[str]:
    """Slurm's compact node list -> host names, in order: ``"n[01-02],gpu7"`` -> n01, n02, gpu7."""
    hosts: list[str] = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,]*", hostlist):
        m = re.fullmatch(r"([^\[]*)\[([^\]]+)\](.*)", part)
        if not m:
            hosts.append(part)
            continue
        prefix, ranges, suffix = m.groups()
        for r in ranges.split(","):
            lo, _, hi = r.partition("-")
            for i in range(int(lo), int(hi or lo) + 1):
                hosts.append(f"{prefix}{str(i).zfill(len(lo))}{suffix}")
    return hosts


def expand_tasks_per_node(spec: str) -> list[int]:
    """``SLURM_STEP_TASKS_PER_NODE`` -> tasks of each node: ``"2(x3),1"`` -> [2, 2, 2, 1]."""
    out: list[int] = []
    for part in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not m:
            raise InputError(f"SLURM_STEP_TASKS_PER_NODE={spec!r}: unexpected format")
        out += [int(m.group(1))] * int(m.group(2) or 1)
    return out


def slurm_tf_config(env: dict[str, str] | None = None) -> dict[str, Any] | None:
    """A ``TF_CONFIG`` for this task of a multi-task Slurm step (``srun``), or None outside one.

    Tasks are numbered node by node (Slurm's default block distribution); task k on its
    node listens on port ``PRNET_DIST_PORT`` (default 12345) + k. Task 0 is the chief.
    """
    env = dict(os.environ if env is None else env)
    ntasks = int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or 1)
    if "SLURM_PROCID" not in env or ntasks < 2:
        return None
    hosts = expand_hostlist(env.get("SLURM_STEP_NODELIST") or env["SLURM_JOB_NODELIST"])
    per_node = expand_tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE", "1"))
    if len(per_node) == 1 and len(hosts) > 1:
        per_node *= len(hosts)
    port = int(env.get("PRNET_DIST_PORT", DEFAULT_PORT))
    workers = [f"{h}:{port + k}" for h, n in zip(hosts, per_node) for k in range(n)]
    rank = int(env["SLURM_PROCID"])
    if len(workers) != ntasks or not 0 <= rank < ntasks:
        raise InputError(f"Slurm step: {ntasks} tasks but {len(workers)} task slots from the node list "
                         f"({env.get('SLURM_STEP_NODELIST')}, {env.get('SLURM_STEP_TASKS_PER_NODE')})")
    node = env.get("SLURMD_NODENAME")
    if node and workers[rank].rsplit(":", 1)[0] != node:
        raise InputError(f"Slurm step: task {rank} runs on {node}, expected {workers[rank]}; "
                         "launch with the default block distribution (srun --distribution=block)")
    return {"cluster": {"worker": workers}, "task": {"type": "worker", "index": rank}}


def _tf_cluster() -> dict[str, Any] | None:
    raw = os.environ.get("TF_CONFIG")
    if raw:
        try:
            cfg = json.loads(raw)
            cluster, task = cfg["cluster"], cfg["task"]
            task["type"], int(task["index"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"TF_CONFIG: expected {{\"cluster\": {{...}}, \"task\": {{\"type\": ..., "
                             f"\"index\": ...}}}} ({exc})") from None
        return {"cluster": cluster, "task": task}
    cfg = slurm_tf_config()
    if cfg is not None:
        os.environ["TF_CONFIG"] = json.dumps(cfg)  # MultiWorkerMirroredStrategy reads it
    return cfg


def _task_rank(cfg: dict[str, Any]) -> tuple[int, int]:
    """(rank, number of tasks): the chief first, then the workers (evaluators excluded)."""
    cluster, task = cfg["cluster"], cfg["task"]
    order = [("chief", i) for i in range(len(cluster.get("chief", [])))]
    order += [("worker", i) for i in range(len(cluster.get("worker", [])))]
    me = (task["type"], int(task["index"]))
    if me not in order:
        raise InputError(f"TF_CONFIG: task {me[0]}:{me[1]} is not a chief or worker of the cluster")
    return order.index(me), len(order)


def _multi_worker_strategy() -> Any:
    """``MultiWorkerMirroredStrategy`` with a ``reduce`` that takes what Keras 3 passes it.

    Keras 3.15 calls it (1) with a whole (inputs, targets) batch of per-replica values at
    the start of ``fit`` / ``evaluate`` (``_maybe_symbolic_build``), which the collective
    reduce rejects ("Attempt to convert a value (PerReplica...)"), and (2) with ``axis=0``
    on the per-replica scalar losses and metrics of every step ("Invalid reduction
    dimension 0"), so ``fit`` cannot run under the stock strategy. Here structures are
    reduced leaf by leaf and scalars across replicas only, which is what Keras means.
    """
    import tensorflow as tf

    class KerasReduceStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op: Any, value: Any, axis: Any = None) -> Any:
            parent = super()

            def one(v: Any) -> Any:
                scalar = all(t.shape.rank == 0 for t in self.experimental_local_results(v))
                return parent.reduce(reduce_op, v, None if scalar else axis)

            return tf.nest.map_structure(one, value)

    return KerasReduceStrategy()


def _jax_processes() -> int:
    env = os.environ
    if env.get("KERAS_DISTRIBUTION_NUM_PROCESSES"):
        return int(env["KERAS_DISTRIBUTION_NUM_PROCESSES"])
    return int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or 1) if "SLURM_PROCID" in env else 1


def plan_distribution(mode: str = "auto") -> DistributionPlan:
    """Pick the data-parallel setup for the visible devices; ``mode="off"`` forces one device."""
    if mode == "off":
        return DistributionPlan("single", 1, detail="distribution disabled")
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        cluster = _tf_cluster()
        if cluster is not None:
            rank, n = _task_rank(cluster)
            strategy = _multi_worker_strategy()
            replicas = strategy.num_replicas_in_sync
            return DistributionPlan("multi_worker", replicas, strategy.scope,
                                    f"tf.distribute.MultiWorkerMirroredStrategy, {n} workers, {replicas} replicas",
                                    workers=n, worker_index=rank, local_replicas=replicas // n, strategy=strategy)
        gpus = tf.config.list_logical_devices("GPU")
        if len(gpus) > 1:
            strategy = tf.distribute.MirroredStrategy([g.name for g in gpus])
            return DistributionPlan("mirrored", strategy.num_replicas_in_sync, strategy.scope,
                                    f"tf.distribute.MirroredStrategy over {len(gpus)} GPUs",
                                    local_replicas=strategy.num_replicas_in_sync, strategy=strategy)
        return DistributionPlan("single", 1, detail=f"tensorflow, {len(gpus)} GPU(s)")
    if backend == "jax":
        import jax

        processes = _jax_processes()
        if processes > 1:
            jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU all-reduce across processes
            keras.distribution.initialize()
        devices = jax.devices()
        if len(devices) > 1:
            return DistributionPlan("jax_data_parallel", len(devices),
                                    detail=f"keras.distribution.DataParallel over {len(devices)} {devices[0].platform} "
                                           f"devices in {jax.process_count()} process(es)",
                                    workers=jax.process_count(), worker_index=jax.process_index(),
                                    local_replicas=jax.local_device_count(),
                                    # each process makes its own shard of every batch (input_shards)
                                    distribution=keras.distribution.DataParallel(devices=devices,
                                                                                 auto_shard_dataset=False))
        return DistributionPlan("single", 1, detail=f"jax, {devices[0].platform}")
    return DistributionPlan("single", 1, detail=f"{backend}: data parallelism not wired here")


def distributed_input(plan: DistributionPlan, make_stream: Callable[[tuple[int, ...], int], Any],
                      signature: tuple, repeat: bool = False) -> Any:
    """What ``fit`` / ``evaluate`` iterate for this process.

    ``make_stream(shards, num_shards)`` returns an iterable (a PyDataset) of this process'
    items; ``signature`` is its item structure as nested (shape, dtype). TensorFlow: a
    ``tf.data`` pipeline per worker over the stream, through
    ``strategy.distribute_datasets_from_function`` under a strategy, so each replica gets
    exactly its own shard (no re-batching, no auto-sharding). Other backends: the stream.
    """
    if keras.backend.backend() != "tensorflow":
        return make_stream(*plan.input_shards())
    import tensorflow as tf

    spec = _tensor_specs(signature)

    def dataset_fn(ctx: Any = None) -> Any:
        if ctx is None:
            shards, num_shards = plan.input_shards()
        else:
            per_pipeline = ctx.num_replicas_in_sync // ctx.num_input_pipelines
            first = ctx.input_pipeline_id * per_pipeline
            shards, num_shards = tuple(range(first, first + per_pipeline)), ctx.num_replicas_in_sync
        stream = make_stream(shards, num_shards)
        data = tf.data.Dataset.from_generator(lambda: iter(stream), output_signature=spec)
        # Repeated: Keras reuses an evaluation iterator across epochs when given step counts;
        # each evaluation takes exactly one pass (fit / evaluate get explicit steps).
        return (data.repeat() if repeat else data).prefetch(1)

    if plan.strategy is None:
        return dataset_fn()
    options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
    return plan.strategy.distribute_datasets_from_function(dataset_fn, options)


def _tensor_specs(signature: Any) -> Any:
    """Nested (shape, numpy dtype) leaves -> ``tf.TensorSpec``."""
    import tensorflow as tf

    if isinstance(signature, dict):
        return {k: _tensor_specs(v) for k, v in signature.items()}
    if len(signature) == 2 and isinstance(signature[1], np.dtype):
        return tf.TensorSpec(signature[0], tf.as_dtype(signature[1]))
    return tuple(_tensor_specs(v) for v in signature)
