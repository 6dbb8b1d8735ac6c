"""Build position-map HDF5 files from 300W-LP / AFLW2000-3D: parallel, resumable, shardable.

Work is cut into fixed chunks of the (sorted, limited, sharded) sample list. Each chunk is
built by a worker into ``OUT.partial/part-KKKKKK.h5`` and renamed into place only when
complete, so the set of part files *is* the commit counter: a crash or ``kill -9`` loses at
most the chunks in flight, and ``resume`` rebuilds exactly those. Per-sample randomness
comes from (seed, sample name), so the result does not depend on worker count, order of
completion or resume point. At the end the parts are concatenated (compressed chunks copied
as bytes) into ``OUT`` atomically, and ``OUT`` minus ``.hdf5`` + ``.skipped.csv`` lists
every sample left out and why.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

from prnet_keras import LABEL_SCALE
from prnet_keras.data import worker
from prnet_keras.data.fitcheck import check_fits_match_model
from prnet_keras.data.hdf5 import check_compression, open_checked, read_attrs
from prnet_keras.data.images import MAX_IMAGE_PIXELS
from prnet_keras.data.jobs import run_tasks, write_skipped_csv
from prnet_keras.data.sources import list_samples
from prnet_keras.data.worker import STAGES
from prnet_keras.data.writer import concat_files, create_file
from prnet_keras.errors import InputError
from prnet_keras.geometry import CropConfig, MorphableModel, UVLayout, load_morphable_model, load_uv_layout
from prnet_keras.utils import atomic_path, atomic_write_text, progress_bar

SETTINGS_FILE = "settings.json"


@dataclasses.dataclass
class BuildSummary:
    """What a build (or merge) did. ``exit_code``: 0 clean, 3 when samples were skipped."""

    out: Path
    written: int
    skipped: int
    seconds: float
    skipped_csv: Path | None = None
    stage_seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    resumed_chunks: int = 0

    @property
    def samples_per_s(self) -> float:
        return (self.written + self.skipped) / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        return 3 if self.skipped else 0

    def describe(self) -> str:
        return (f"wrote {self.written} samples to {self.out}, skipped {self.skipped}"
                + (f" (see {self.skipped_csv})" if self.skipped else "")
                + f", {self.seconds:.1f} s, {self.samples_per_s:.1f} samples/s")


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"I/N"`` (0 <= I < N) or (I, N) -> (I, N); None stays None."""
    if shard is None or shard == "":
        return None
    try:
        i, n = (int(v) for v in (shard.split("/") if isinstance(shard, str) else shard))
    except (ValueError, TypeError):
        raise InputError(f"--shard {shard}: expected I/N, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise InputError(f"--shard {shard}: expected 0 <= I < N")
    return i, n


def shard_slice(n_items: int, shard: tuple[int, int] | None) -> slice:
    """Contiguous block of shard I of N, so shards concatenated in order equal the whole."""
    if shard is None:
        return slice(0, n_items)
    i, n = shard
    return slice(i * n_items // n, (i + 1) * n_items // n)


# ---- orchestration -------------------------------------------------------------------------
def _settings(source, layout, bfm, uv_data, buildmode, store, crop_format, seed, jpeg_quality, shard, limit,
              n_refs, commit_every, compression="gzip", crop_config: CropConfig | None = None,
              max_image_pixels=MAX_IMAGE_PIXELS) -> dict[str, Any]:
    """Everything that decides the file's content (resume refuses to mix different ones)."""
    if buildmode not in ("train", "val"):
        raise InputError(f"--buildmode {buildmode}: expected train or val")
    if store not in ("crops", "raw"):
        raise InputError(f"--store {store}: expected crops or raw")
    if crop_format not in ("jpeg", "raw"):
        raise InputError(f"--crop-format {crop_format}: expected jpeg or raw")
    check_compression(compression)
    if not 1 <= int(jpeg_quality) <= 100:
        raise InputError(f"--jpeg-quality {jpeg_quality}: expected 1..100")
    if limit is not None and int(limit) < 1:
        raise InputError(f"--limit {limit}: expected a positive number of samples")
    if int(commit_every) < 1:
        raise InputError(f"--commit-every {commit_every}: expected >= 1")
    if int(max_image_pixels) < 1:
        raise InputError(f"max_image_pixels {max_image_pixels}: expected a positive number of pixels")
    return {
        "source": str(Path(source).resolve()), "layout": layout, "bfm": str(bfm),
        "uv_data": str(Path(uv_data).resolve()) if uv_data else None, "buildmode": buildmode, "store": store,
        "crop_format": crop_format if store == "crops" else "", "seed": int(seed), "jpeg_quality": int(jpeg_quality),
        "compression": compression, "shard": f"{shard[0]}/{shard[1]}" if shard else "", "limit": limit,
        "n_refs": n_refs,
        "commit_every": int(commit_every), "crop_config": CropConfig.coerce(crop_config).to_dict(),
        "max_image_pixels": int(max_image_pixels),
    }


def _file_attrs(settings: dict, model: MorphableModel, layout: UVLayout, model_seed: int) -> dict[str, Any]:
    spec = settings["bfm"]
    if not spec.startswith("synthetic"):
        spec = str(Path(spec).resolve())
    args = {k: settings[k] for k in ("source", "layout", "bfm", "uv_data", "buildmode", "store", "crop_format",
                                     "seed", "jpeg_quality", "limit")}
    return {
        "store": settings["store"], "crop_format": settings["crop_format"], "compression": settings["compression"],
        "buildmode": settings["buildmode"],
        "source_layout": settings["layout"], "seed": settings["seed"], "shard": settings["shard"],
        "model_name": model.name, "model_spec": spec, "model_seed": model_seed,
        "n_shape": model.n_shape, "n_exp": model.n_exp, "triangles": "face+mouth",
        "layout_source": layout.source, "label_scale": LABEL_SCALE, "resolution": layout.resolution,
        "crop_config": settings["crop_config"], "args": args,
    }


def _prepare_partial(partial: Path, settings: dict, resume: bool, overwrite: bool) -> None:
    if partial.exists():
        if resume:
            try:
                old = json.loads((partial / SETTINGS_FILE).read_text())
            except (OSError, json.JSONDecodeError):
                old = None
            if old != json.loads(json.dumps(settings)):
                diff = sorted(k for k in settings if not old or old.get(k) != json.loads(json.dumps(settings[k])))
                raise InputError(f"{partial}: started with different settings ({', '.join(diff) or 'unreadable'}); "
                                 "use --overwrite to start again")
            return
        if not overwrite:
            raise InputError(f"{partial}: an unfinished build exists; pass --resume to continue or --overwrite "
                             "to restart")
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    atomic_write_text(partial / SETTINGS_FILE, json.dumps(settings, indent=2))


def skipped_csv_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".skipped.csv")


def build_hdf5(
    source: str | os.PathLike,
    out: str | os.PathLike,
    layout: str = "auto",
    bfm: str | os.PathLike = "synthetic",
    uv_data: str | os.PathLike | None = None,
    buildmode: str = "train",
    store: str = "crops",
    workers: int = 1,
    shard: str | tuple[int, int] | None = None,
    limit: int | None = None,
    seed: int = 0,
    jpeg_quality: int = 95,
    resume: bool = False,
    overwrite: bool = False,
    crop_format: str = "jpeg",
    compression: str = "gzip",
    commit_every: int = 64,
    progress: bool = False,
    model: MorphableModel | None = None,
    rotate: str | list[float] | None = None,
    crop_config: CropConfig | Mapping[str, Any] | None = None,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
) -> BuildSummary:
    """Build ``out`` (a position-map HDF5 file) from a 300W-LP / AFLW2000-3D folder or zip.

    Training builds (``buildmode="train"``) perturb each crop with a generator seeded by
    (seed, sample name); validation builds use the exact keypoint box. ``model`` overrides
    ``bfm`` with an already loaded model (``bfm`` is then only recorded). ``rotate``: angles
    in degrees ("15,-15"); each sample is then read once per angle, rotated in-plane with its
    fit (``data.rotate``; 0 is the original), as ``<name>_angle_<a>``. (A ``trainDataLabel.txt``
    list of crops and maps is built by ``data.listfmt.build_list_hdf5``.) ``crop_config``:
    the crop rules (``geometry.CropConfig``; None: the packaged defaults); ``store``,
    ``crop_format``, ``compression``, ``jpeg_quality``, ``commit_every``, ``max_image_pixels``
    default to the packaged ``data`` section. Fits that do not belong to the model stop the
    build (``data.fitcheck``). Samples that cannot be used (unreadable, images above
    ``max_image_pixels``, implausible fits, unsafe zip members, ...) are left out and listed
    with their reason in ``OUT`` minus ``.hdf5`` + ``.skipped.csv``.
    """
    t_start = time.perf_counter()
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"{out}: exists; pass --overwrite to replace it")
    shard_t = parse_shard(shard)
    if int(workers) < 1:
        raise InputError(f"--workers {workers}: expected >= 1")
    refs = list_samples(source, layout)
    resolved = layout if layout != "auto" else _layout_of(source)
    refs = refs[: int(limit)] if limit else refs
    refs = refs[shard_slice(len(refs), shard_t)]
    samples = refs
    angles = None
    if rotate is not None:
        from prnet_keras.data.rotate import expand_rotations, parse_angles

        angles = parse_angles(rotate)
        refs = expand_rotations(refs, angles)
    settings = _settings(source, resolved, bfm, uv_data, buildmode, store, crop_format, seed, jpeg_quality,
                         shard_t, limit, len(refs), commit_every, compression, CropConfig.coerce(crop_config),
                         max_image_pixels)
    settings["rotate"] = angles
    given_model = model is not None
    model = model if given_model else load_morphable_model(bfm)
    check_fits_match_model(source, samples, model, str(bfm))
    uv_layout = load_uv_layout(uv_data, model)
    attrs = _file_attrs(settings, model, uv_layout, 0)
    attrs["args"]["rotate"] = angles
    worker_model = model if given_model else str(bfm)
    return run_build(refs, out, settings, attrs, uv_layout, int(workers), resume, overwrite, progress, t_start,
                     worker.init_worker, (model, uv_layout, settings, attrs), worker.build_chunk,
                     (worker_model, uv_layout, settings, attrs))


def run_build(refs: list, out: Path, settings: dict, attrs: dict, uv_layout: UVLayout, workers: int, resume: bool,
              overwrite: bool, progress: bool, t_start: float, init, init_args: tuple, task,
              pool_init_args: tuple) -> BuildSummary:
    """Chunked, resumable build of ``refs`` into ``out`` by ``task`` (a worker's chunk builder,
    see ``data.worker.build_chunk``): part files, resume, assembly and ``.skipped.csv``."""
    partial = out.with_name(out.name + ".partial")
    _prepare_partial(partial, settings, resume, overwrite)
    commit_every = settings["commit_every"]
    chunks = [refs[i:i + commit_every] for i in range(0, len(refs), commit_every)]
    parts = [partial / f"part-{k:06d}.h5" for k in range(len(chunks))]
    todo = [(k, chunks[k], str(parts[k])) for k in range(len(chunks)) if not parts[k].exists()]
    done_before = sum(len(chunks[k]) for k in range(len(chunks)) if parts[k].exists())
    stage = dict.fromkeys(STAGES, 0.0)
    bar = progress_bar(len(refs), out.name, "sample", progress, initial=done_before)
    try:
        for k, _, _, times in run_tasks(todo, workers, init, init_args, task, pool_init_args):
            for key, v in times.items():
                stage[key] += v
            bar.update(len(chunks[k]))
    finally:
        bar.close()

    t_assemble = time.thread_time()
    with atomic_path(out) as tmp:
        with create_file(tmp, attrs, uv_layout) as f:
            concat_files(parts, f)
            written = len(f["name"])
            skipped = list(zip(*(f["skipped"][k].asstr()[:] for k in ("name", "source_path", "reason"))))
            f.attrs["n_samples"] = written
    stage["write"] += time.thread_time() - t_assemble
    csv_path = skipped_csv_path(out)
    write_skipped_csv(csv_path, skipped)
    shutil.rmtree(partial, ignore_errors=True)
    return BuildSummary(out, written, len(skipped), time.perf_counter() - t_start, csv_path, stage,
                        resumed_chunks=len(chunks) - len(todo))


def _layout_of(source) -> str:
    from prnet_keras.data.sources import detect_layout

    return detect_layout(source)


def merge_hdf5(inputs: list[str | os.PathLike], out: str | os.PathLike, overwrite: bool = False) -> BuildSummary:
    """Join shard files (``--shard I/N`` builds) into one, in shard order.

    All N shards of one build must be given; the result equals a single build with the
    same settings. Files without shard attributes are concatenated in the given order.
    """
    t0 = time.perf_counter()
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"{out}: exists; pass --overwrite to replace it")
    if not inputs:
        raise InputError("merge: no input files given")
    metas = []
    for p in inputs:
        with open_checked(p) as f:
            metas.append((Path(p), read_attrs(f), f["uv_layout"][()].tobytes()))
    first = metas[0][1]
    for p, a, _ in metas[1:]:
        for key in ("store", "crop_format", "compression", "layout_hash", "buildmode", "seed", "model_spec",
                    "n_shape", "n_exp"):
            if a.get(key) != first.get(key):
                raise InputError(f"{p}: {key} {a.get(key)!r} differs from {metas[0][0]} ({first.get(key)!r})")
    shards = [a.get("shard", "") for _, a, _ in metas]
    if all(shards):
        parsed = [parse_shard(s) for s in shards]
        n = parsed[0][1]
        if sorted(i for i, _ in parsed) != list(range(n)) or any(m != n for _, m in parsed):
            raise InputError(f"merge: expected shards 0..{n - 1} of {n} exactly once, got {', '.join(shards)}")
        metas = [m for _, m in sorted(zip(parsed, metas), key=lambda t: t[0][0])]
    attrs = {k: v for k, v in first.items() if k not in ("format", "format_version", "layout_hash", "n_samples")}
    attrs["shard"] = ""
    layout = UVLayout.from_bytes(metas[0][2])
    with atomic_path(out) as tmp:
        with create_file(tmp, attrs, layout) as f:
            concat_files([m[0] for m in metas], f)
            written = len(f["name"])
            skipped = list(zip(*(f["skipped"][k].asstr()[:] for k in ("name", "source_path", "reason"))))
            f.attrs["n_samples"] = written
    csv_path = skipped_csv_path(out)
    write_skipped_csv(csv_path, skipped)
    return BuildSummary(out, written, len(skipped), time.perf_counter() - t0, csv_path)

