"""Resumable, parallel per-sample jobs that write their results into a folder (fit, rotate).

The item list is cut into fixed chunks. A worker handles one chunk (its output files are
written atomically, one by one) and returns what it wrote and skipped; the parent then
records the chunk as done in ``OUT/.prnet-progress/chunk-KKKKKK.json``. An interrupted job
rerun with ``resume`` redoes only the chunks without a record (rewriting a file that was
already there gives the same file). When every chunk is done, ``OUT/skipped.csv`` lists the
items left out and why (header only when none) and the progress folder is removed.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from prnet_keras.errors import InputError
from prnet_keras.utils import atomic_write_text, progress_bar

PROGRESS_DIR = ".prnet-progress"
SETTINGS_FILE = "settings.json"
SKIPPED_CSV = "skipped.csv"


@dataclasses.dataclass
class JobSummary:
    """What a folder job did. ``exit_code``: 0 clean, 3 when items were skipped."""

    out: Path
    written: int
    skipped: int
    seconds: float
    skipped_csv: Path
    resumed_chunks: int = 0
    what: str = "samples"

    @property
    def exit_code(self) -> int:
        return 3 if self.skipped else 0

    def describe(self) -> str:
        return (f"wrote {self.written} {self.what} to {self.out}, skipped {self.skipped}"
                + (f" (see {self.skipped_csv})" if self.skipped else "") + f", {self.seconds:.1f} s")


def write_skipped_csv(path: Path, entries: list[tuple[str, str, str]]) -> None:
    """``name,source_path,reason`` rows (header only when none), written atomically."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["name", "source_path", "reason"])
    w.writerows(entries)
    atomic_write_text(path, buf.getvalue())


def run_tasks(todo: Sequence, workers: int, init: Callable, init_args: tuple, task: Callable,
              pool_init_args: tuple | None = None) -> Iterator[Any]:
    """Yield ``task(item)`` for each item of ``todo`` as they finish.

    One worker (or one item): inline, after ``init(*init_args)``. Otherwise a spawn pool
    (forking a process that runs BLAS / OpenCV / HDF5 threads can deadlock) whose workers run
    ``init(*pool_init_args, True)`` (the last argument tells them they are in a pool;
    ``pool_init_args`` defaults to ``init_args``, e.g. a model spec instead of the model).
    """
    if workers == 1 or len(todo) <= 1:
        init(*init_args)
        for item in todo:
            yield task(item)
        return
    args = (init_args if pool_init_args is None else pool_init_args) + (True,)
    ctx = mp.get_context("spawn")
    with ctx.Pool(min(workers, len(todo)), initializer=init, initargs=args) as pool:
        try:
            yield from pool.imap_unordered(task, todo)
        except BaseException:
            pool.terminate()
            raise


def _prepare(out: Path, settings: dict, resume: bool, overwrite: bool) -> Path:
    state = out / PROGRESS_DIR
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    if state.exists():
        if resume:
            try:
                old = json.loads((state / SETTINGS_FILE).read_text())
            except (OSError, json.JSONDecodeError):
                old = None
            new = json.loads(json.dumps(settings))
            if old != new:
                diff = sorted(k for k in new if not old or old.get(k) != new[k])
                raise InputError(f"{out}: an unfinished job was started with different settings "
                                 f"({', '.join(diff) or 'unreadable'}); use --overwrite to start again")
            return state
        if not overwrite:
            raise InputError(f"{out}: an unfinished job exists; pass --resume to continue or --overwrite to restart")
        shutil.rmtree(state)
    elif (out / SKIPPED_CSV).exists() and not overwrite:
        raise InputError(f"{out}: holds a finished job ({SKIPPED_CSV}); pass --overwrite to write it again")
    state.mkdir(parents=True)
    atomic_write_text(state / SETTINGS_FILE, json.dumps(settings, indent=2))
    return state


def run_folder_job(items: Sequence, out: str | os.PathLike, settings: dict, *, workers: int, resume: bool,
                   overwrite: bool, progress: bool, init: Callable, init_args: tuple, task: Callable,
                   chunk_size: int, pool_init_args: tuple | None = None, what: str = "samples") -> JobSummary:
    """Run ``task((k, chunk))`` over chunks of ``items``; ``task`` returns (k, written, skipped).

    ``skipped`` is a list of (name, source_path, reason). ``settings`` (JSON-able) must match
    on ``resume``. ``overwrite`` restarts an unfinished job or redoes a finished one (files are
    replaced, others in ``out`` are left alone).
    """
    t0 = time.perf_counter()
    out = Path(out)
    if int(workers) < 1:
        raise InputError(f"--workers {workers}: expected >= 1")
    if int(chunk_size) < 1:
        raise InputError(f"chunk size: expected >= 1, got {chunk_size}")
    state = _prepare(out, settings, resume, overwrite)
    chunks = [list(items[i:i + chunk_size]) for i in range(0, len(items), chunk_size)]
    records = [state / f"chunk-{k:06d}.json" for k in range(len(chunks))]
    todo = [(k, chunks[k]) for k in range(len(chunks)) if not records[k].exists()]
    done_before = sum(len(chunks[k]) for k in range(len(chunks)) if records[k].exists())
    bar = progress_bar(len(items), out.name, "sample", progress, initial=done_before)
    try:
        for k, written, skipped in run_tasks(todo, int(workers), init, init_args, task, pool_init_args):
            atomic_write_text(records[k], json.dumps({"written": written, "skipped": [list(s) for s in skipped]}))
            if bar is not None:
                bar.update(len(chunks[k]))
    finally:
        if bar is not None:
            bar.close()
    written, skipped = 0, []
    for rec in records:
        data = json.loads(rec.read_text())
        written += int(data["written"])
        skipped += [tuple(s) for s in data["skipped"]]
    csv_path = out / SKIPPED_CSV
    write_skipped_csv(csv_path, skipped)
    shutil.rmtree(state, ignore_errors=True)
    return JobSummary(out, written, len(skipped), time.perf_counter() - t0, csv_path,
                      resumed_chunks=len(chunks) - len(todo), what=what)
