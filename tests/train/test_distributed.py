"""Data parallelism for real: two ``prnet-train`` processes on loopback, JAX DataParallel.

- Two workers (``TF_CONFIG``, ports picked free at run time) train one model with
  MultiWorkerMirroredStrategy: each trains on its own half of every global batch (the
  seen sample indices are recorded per process), only the chief writes; ``kill -9`` of the
  worker stops the chief with one error line; both restarted (this time from a Slurm step
  environment, as ``srun`` sets it) resume after the last completed epoch.
- JAX: DataParallel over two host devices gives the per-step losses of one device; two JAX
  processes (jax.distributed, Gloo) train one model, each on its half of every batch.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHIEF_FILES = {"epoch_0004.keras", "epoch_0005.keras", "epoch_0006.keras", "best_eval_loss.keras", "best_nme.keras",
               "run_state.json", "training_log.csv", "loss.png", "nme.png", "config.json", "uv_layout.npz"}


def free_ports(n: int, consecutive: bool = False) -> list[int]:
    """Ports free right now on 127.0.0.1 (``consecutive``: p, p+1, ...)."""
    for _ in range(200):
        socks = []
        try:
            first = socket.socket()
            first.bind(("127.0.0.1", 0))
            socks.append(first)
            ports = [first.getsockname()[1]]
            for k in range(1, n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", ports[0] + k if consecutive else 0))
                ports.append(s.getsockname()[1])
            return ports
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports")


def train_command() -> list[str]:
    script = Path(sys.executable).with_name("prnet-train")  # the console script, as users run it
    return [str(script)] if script.exists() else [sys.executable, "-m", "prnet_keras.cli.train_model"]


def launch(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    full = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", **env}
    return subprocess.Popen(train_command() + args, cwd=cwd, env=full, stdout=subprocess.DEVNULL,
                            stderr=log.open("w"))


@contextlib.contextmanager
def stopped_at_exit(procs: list[subprocess.Popen]):
    """Whatever happens in the block, no process outlives it."""
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def all_succeed(procs: list[subprocess.Popen], logs: list[Path], timeout: float = 400) -> None:
    with stopped_at_exit(procs):
        rcs = [p.wait(timeout=timeout) for p in procs]
    assert rcs == [0] * len(procs), "\n".join(log.read_text()[-2000:] for log in logs)


def wait_for_epochs(procs: list[subprocess.Popen], state: Path, at_least: int, logs: list[Path],
                    timeout: float = 400) -> int:
    t0 = time.time()
    while time.time() - t0 < timeout:
        for p, log in zip(procs, logs):
            if p.poll() is not None:
                raise AssertionError(f"a worker exited early (rc {p.returncode}):\n{log.read_text()[-3000:]}")
        if state.exists():
            try:
                done = json.loads(state.read_text())["completed_epochs"]
            except (json.JSONDecodeError, KeyError):
                done = 0
            if done >= at_least:
                return done
        time.sleep(0.1)
    raise AssertionError("no progress in time")


def trained_records(folder: Path) -> tuple[dict[int, list[int]], list[int]]:
    """epoch -> sample indices trained on (all processes), and the per-item sample counts.

    A process' record restarts at item 0 when Keras drops a look-ahead iterator; the items
    after the last restart are the ones trained on, in order."""
    seen: dict[int, list[int]] = defaultdict(list)
    sizes = []
    for f in sorted(folder.glob("worker-*.txt")):
        lines = [[int(v) for v in line.split()] for line in f.read_text().splitlines()]
        last = max(i for i, line in enumerate(lines) if line[0] == 0)
        for k, (item, epoch, _step, _shard, *idx) in enumerate(lines[last:]):
            assert item == k, f"{f.name}: items out of order"
            seen[epoch] += idx
            sizes.append(len(idx))
    return dict(seen), sizes


def test_two_workers_split_every_batch_and_resume_after_kill9(toy_hdf5_dir, tiny_model, tmp_path):
    run, n = tmp_path / "run", 16  # toy train.hdf5 holds 16 samples
    common = ["--hdf5dir", str(toy_hdf5_dir), "--model", str(tiny_model), "--batchsize", "4", "--epochs", "6",
              "--learningrate", "0.01", "--keep-checkpoints", "3", "--quiet"]
    for i in (1, 2):
        (tmp_path / f"cfg{i}.json").write_text(json.dumps({"train": {"record_batches": str(tmp_path / f"seen{i}")}}))
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    logs = [tmp_path / "chief1.log", tmp_path / "worker1.log"]
    # The worker gets an --output of its own: it must never create it.
    outs = [run, tmp_path / "worker-output"]
    procs = [launch(common + ["--output", str(outs[i]), "--config", str(tmp_path / "cfg1.json")],
                    {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})},
                    tmp_path / f"cwd{i}", logs[i]) for i in (0, 1)]
    with stopped_at_exit(procs):
        wait_for_epochs(procs, run / "run_state.json", 2, logs)
        procs[1].send_signal(signal.SIGKILL)
        procs[1].wait(timeout=30)
        rc = procs[0].wait(timeout=120)  # the chief notices the dead peer by itself
    chief_err = logs[0].read_text()
    assert rc == 2, chief_err[-3000:]
    last = chief_err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "same command to resume" in last
    assert not outs[1].exists() and not any((tmp_path / "cwd1").iterdir()), "the worker wrote files"
    k = json.loads((run / "run_state.json").read_text())["completed_epochs"]
    assert 2 <= k < 6
    seen, sizes = trained_records(tmp_path / "seen1")
    assert set(sizes) == {2}, "each of the 2 replicas gets half of the global batch of 4"
    for epoch in range(k):  # completed epochs: every sample exactly once across both workers
        assert sorted(seen[epoch]) == list(range(n)), f"epoch {epoch}"

    # Restart both with the same command, from a Slurm step environment this time.
    base = free_ports(2, consecutive=True)[0]
    slurm = {"SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NODELIST": "127.0.0.1", "SLURM_STEP_TASKS_PER_NODE": "2",
             "SLURMD_NODENAME": "127.0.0.1", "PRNET_DIST_PORT": str(base)}
    logs = [tmp_path / "chief2.log", tmp_path / "worker2.log"]
    args = common + ["--output", str(run), "--config", str(tmp_path / "cfg2.json")]
    all_succeed([launch(args, {**slurm, "SLURM_PROCID": str(i), "SLURM_LOCALID": str(i)}, tmp_path / f"cwd{i}",
                        logs[i]) for i in (0, 1)], logs)
    assert f"resuming after epoch {k}" in logs[0].read_text()
    state = json.loads((run / "run_state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == list(range(7)) and state["completed_epochs"] == 6
    assert [r["start_epoch"] for r in state["runs"]] == [0, k]
    assert state["runs"][1]["distribution"]["kind"] == "multi_worker"
    assert state["runs"][1]["distribution"]["workers"] == 2
    assert state["optimizer_iterations"] == 6 * 4
    assert {p.name for p in run.iterdir()} == CHIEF_FILES
    seen, sizes = trained_records(tmp_path / "seen2")
    assert sorted(seen) == list(range(k, 6)) and set(sizes) == {2}
    for epoch in range(k, 6):
        assert sorted(seen[epoch]) == list(range(n)), f"epoch {epoch}"
    assert not outs[1].exists()


def test_slurm_step_becomes_a_tf_config():
    from prnet_keras.errors import InputError
    from prnet_keras.train.distribute import expand_hostlist, expand_tasks_per_node, slurm_tf_config

    assert expand_hostlist("n[01-03,07],gpu-a[9-10],login") == ["n01", "n02", "n03", "n07", "gpu-a9", "gpu-a10",
                                                                 "login"]
    assert expand_tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    env = {"SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "gpu[1-2]",
           "SLURM_STEP_TASKS_PER_NODE": "2(x2)", "SLURMD_NODENAME": "gpu2"}
    assert slurm_tf_config(env) == {"cluster": {"worker": ["gpu1:12345", "gpu1:12346", "gpu2:12345", "gpu2:12346"]},
                                    "task": {"type": "worker", "index": 3}}
    assert slurm_tf_config({**env, "SLURM_STEP_NUM_TASKS": "1"}) is None, "one task: no cluster"
    assert slurm_tf_config({}) is None
    with pytest.raises(InputError, match="block"):
        slurm_tf_config({**env, "SLURMD_NODENAME": "gpu1"})


def test_jax_data_parallel_on_two_devices_matches_one_device(toy_hdf5_dir, tiny_model, tmp_path):
    pytest.importorskip("jax")
    out = tmp_path / "jax.npz"
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": "",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("jax_parallel_script.py")),
                           str(toy_hdf5_dir), str(tiny_model), str(out)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as z:
        res = {k: z[k] for k in z.files}
    assert str(res["parallel_kind"]) == "jax_data_parallel" and int(res["parallel_replicas"]) == 2
    assert str(res["single_kind"]) == "single"
    assert len(res["parallel_loss"]) == 3 and np.all(np.isfinite(res["parallel_loss"]))
    np.testing.assert_allclose(res["parallel_loss"], res["single_loss"], rtol=1e-5)
    assert not np.allclose(res["parallel_loss"][0], res["parallel_loss"][2]), "the model trained"
    np.testing.assert_allclose(res["parallel_weights"], res["single_weights"], rtol=1e-4, atol=1e-6)


def test_batch_size_must_split_evenly(toy_hdf5_dir, tmp_path, capsys, monkeypatch):
    from prnet_keras.cli.train_model import main
    from prnet_keras.train import trainer
    from prnet_keras.train.distribute import DistributionPlan

    monkeypatch.setattr(trainer, "plan_distribution", lambda mode: DistributionPlan("mirrored", 4, local_replicas=4))
    assert main(["--hdf5dir", str(toy_hdf5_dir), "--batchsize", "6", "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --batchsize 6") and "multiple of 4" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_two_jax_processes_train_one_model_over_gloo(toy_hdf5_dir, tiny_model, tmp_path):
    """Multi-process JAX on CPU: ``keras.distribution.initialize`` (jax.distributed, Gloo
    collectives), DataParallel over both processes' devices, each making its half of every batch."""
    pytest.importorskip("jax")
    run = tmp_path / "run"
    (tmp_path / "cfg.json").write_text(json.dumps({"train": {"record_batches": str(tmp_path / "seen")}}))
    args = ["--hdf5dir", str(toy_hdf5_dir), "--model", str(tiny_model), "--batchsize", "4", "--epochs", "2",
            "--learningrate", "0.01", "--quiet", "--output", str(run), "--config", str(tmp_path / "cfg.json")]
    env = {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
           "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{free_ports(1)[0]}"}
    logs = [tmp_path / f"p{i}.log" for i in (0, 1)]
    all_succeed([launch(args, {**env, "KERAS_DISTRIBUTION_PROCESS_ID": str(i)}, tmp_path / f"cwd{i}", logs[i])
                 for i in (0, 1)], logs, timeout=600)
    state = json.loads((run / "run_state.json").read_text())
    assert state["runs"][0]["distribution"]["kind"] == "jax_data_parallel"
    assert state["runs"][0]["distribution"]["workers"] == 2 and state["completed_epochs"] == 2
    assert not any((tmp_path / "cwd1").iterdir())
    seen, sizes = trained_records(tmp_path / "seen")
    assert set(sizes) == {2} and sorted(seen) == [0, 1]
    for epoch in (0, 1):
        assert sorted(seen[epoch]) == list(range(16))
