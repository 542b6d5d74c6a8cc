"""`ganrun-sample` and `ganrun-eval`: work on a finished run, offline.

    ganrun-sample <run dir or ckpt> [n=64] [out=PATH] [folder=true] [seed=0] [truncation=0.7|none]
                  [class=K]
    ganrun-eval   <run dir or ckpt> [--images FOLDER] [n_fake=2000] [n_real=...] [extractor=...]

The generator is rebuilt from the configuration stored in the checkpoint, so
sampling never touches the dataset; evaluation reads the dataset (for the real
side) as the run's config names it, and the metrics as the run configured them.
Every bad option or unusable path is one line naming the cause, never a traceback.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

from ganrun.cli.options import (
    USAGE_EVAL,
    USAGE_SAMPLE,
    boolean,
    names_list,
    parse,
    truncation_value,
)
from ganrun.errors import UserError
from ganrun.outputs import checkpoint_of
from ganrun.ranges import SEED_LIMIT

log = logging.getLogger("ganrun")

RUN = "run"  # truncation=RUN: the run's own sample.truncation
MEMORY_LIMIT = 0.8  # the share of this machine's memory a request may take (as a run's)


def load_module(ckpt: Path):
    """The GANModule of a checkpoint, weights loaded, on CPU, without its dataset."""
    import torch
    from omegaconf import OmegaConf

    from ganrun.training.module import GANModule

    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
    except Exception as e:
        raise UserError(f"{ckpt}: not a readable checkpoint, the file is corrupt or truncated "
                        f"({e.__class__.__name__}: {str(e)[:120]}); give another run or "
                        "checkpoint") from None
    try:
        saved = state["ganrun"]
        cfg = OmegaConf.create(saved["config"])
        shape = tuple(saved["data_shape"])
    except Exception as e:
        raise UserError(f"{ckpt}: not a ganrun checkpoint ({e.__class__.__name__}: {e})") from None
    module = GANModule(cfg, shape, num_classes=saved["num_classes"])
    weights = {k: v for k, v in state["state_dict"].items()
               if k not in ("fixed_noise", "fixed_labels")}  # kept by ganrun <= 0.1
    module.load_state_dict(module.upgrade_state_dict(weights))
    module.on_load_checkpoint(state)  # steps, the regularizers' state
    return module.eval(), cfg


def with_metric_defaults(metrics):
    """A run's metrics config with the keys added to ganrun since it ran (is_splits,
    modes_threshold, ...) at their defaults, so older runs can still be evaluated."""
    from importlib.resources import files

    from omegaconf import OmegaConf

    defaults = OmegaConf.load(files("ganrun.configs") / "metrics" / "default.yaml")
    return OmegaConf.merge(defaults, metrics)


def _run_dir(ckpt: Path) -> Path:
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def check_seed(seed: int) -> None:
    """Seeds of ganrun-sample and ganrun-eval: what torch.manual_seed takes everywhere."""
    if not 0 <= seed < SEED_LIMIT:
        raise UserError(f"seed={seed}: must be in [0, {SEED_LIMIT - 1}]")


def _check_sample_options(n: int, seed: int, truncation) -> None:
    """What torch would refuse with a traceback, or take silently (truncation=0: off)."""
    if not n >= 1:
        raise UserError(f"n={n}: must be >= 1")
    check_seed(seed)
    if truncation not in (RUN, None) and not (truncation > 0 and math.isfinite(truncation)):
        raise UserError(f"truncation={truncation:g}: must be > 0; truncation=none for no "
                        f"truncation")


def _labels(module, n: int, class_: int | None, folder: bool):
    """The classes to draw, and the grid's images per row.

    class=K: n samples of class K. A class-conditional grid: one row per class, n // classes
    samples each, as the training grids (callbacks/samples.py). Otherwise None: labels as
    the metrics draw them (uniform classes, or a regularizer's labels as it draws them)."""
    import torch

    classes = 0 if module.labeller is not None else module.num_classes
    if class_ is not None:
        if not classes:
            labeller = module.labeller
            why = (f"its generator is conditioned on regularizer {labeller.name}'s "
                   f"{labeller.label_kind}, not classes" if labeller is not None
                   else "it is unconditional")
            raise UserError(f"class={class_}: this run has no classes to choose ({why}; "
                            f"class= needs model.conditional=true on a labelled dataset)")
        if not 0 <= class_ < classes:
            raise UserError(f"class={class_}: this run has {classes} classes, 0 to {classes - 1}")
        return torch.full((n,), class_), None
    if classes and not folder:
        if n < classes:
            raise UserError(f"n={n}: one row per class needs n >= {classes}, the run's classes "
                            f"(or class=K for one class)")
        return torch.arange(classes).repeat_interleave(n // classes), n // classes
    return None, None


def _default_target(samples: Path, step: int, n: int, seed: int, truncation: float | None,
                    class_: int | None, folder: bool) -> Path:
    """samples/sample_<step>_n<N>_seed<S>[_trunc<T>][_class<C>][.png]: one name per
    request (training's grids are step_<step>.png), and _2, _3, ... rather than
    overwriting a file already there."""
    stem = (f"sample_{step:07d}_n{n}_seed{seed}" + (f"_trunc{truncation:g}" if truncation else "")
            + (f"_class{class_}" if class_ is not None else ""))
    return free_path(samples, stem, "" if folder else ".png")


def free_path(folder: Path, stem: str, suffix: str) -> Path:
    """folder/<stem><suffix>, or <stem>_2<suffix>, _3, ...: never a name already taken."""
    target, k = folder / (stem + suffix), 1
    while target.exists():
        k += 1
        target = folder / f"{stem}_{k}{suffix}"
    return target


def write_record(record: dict, folders: list[Path], stem: str) -> Path | None:
    """`record` as JSON in the first of `folders` that takes it, under a name of its own
    (free_path: a file already there is never overwritten); None, with a warning, when
    none does (the results are still printed)."""
    problems = []
    for folder in folders:
        target = free_path(folder, stem, ".json")
        try:
            with open(target, "x") as f:  # "x": not even over a file made since free_path
                f.write(json.dumps(record, indent=2) + "\n")
            return target
        except OSError as e:
            problems.append(f"{folder}: {e.strerror or e}")
    log.warning("could not write %s.json (%s); the results are printed only", stem,
                "; ".join(problems))
    return None


def sample(path: str, n: int = 64, out: str | None = None, folder: bool = False, seed: int = 0,
           truncation: float | str | None = RUN, class_: int | None = None,
           memory_limit: float = MEMORY_LIMIT) -> Path:
    """A grid (PNG) of n samples, or a folder of n PNGs, of a run's generator.

    truncation: RUN (the run's sample.truncation), None (off) or T > 0. class_: only that
    class (conditional runs). Without `out` the file gets a name of its own in the run's
    samples/; an `out` that exists is refused, never overwritten. The n samples are held
    at once (with the grid's picture): a request over `memory_limit` of this machine's
    memory is refused before any is drawn."""
    from ganrun.memory import check_limit, check_samples, request_estimate
    from ganrun.samples import generate_many, image_grid, point_scatter, save_each, save_png

    _check_sample_options(n, seed, truncation)
    check_limit(memory_limit)
    if out and not folder and Path(out).suffix.lower() != ".png":
        raise UserError(f"out={out}: a grid is written as PNG; name it .png (or folder=true)")
    ckpt = checkpoint_of(path)
    module, cfg = load_module(ckpt)
    if truncation != RUN:
        cfg.sample.truncation = truncation
    labels, nrow = _labels(module, n, class_, folder)
    shape = tuple(module.data_shape)
    picture = None if folder else "scatter" if module.points else "grid"
    check_samples(f"n={n}", request_estimate(n, shape, cfg.model, picture, ckpt.stat().st_size),
                  memory_limit, "lower n")
    if out:
        target = Path(out).expanduser()
        if target.exists() and not (folder and target.is_dir() and not any(target.iterdir())):
            raise UserError(f"out={out} exists; ganrun-sample does not overwrite: remove it or "
                            f"give another out=")
    else:
        target = _default_target(_run_dir(ckpt) / "samples", module.g_steps, n, seed,
                                 cfg.sample.truncation, class_, folder)
    blocker = next((p for p in reversed(target.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"cannot write {target}: {blocker} is a file, not a folder; give "
                        f"another out=PATH")
    import torch

    torch.manual_seed(seed)
    fake = generate_many(module, len(labels) if labels is not None else n, labels=labels)
    try:
        if folder:
            save_each(fake, target, module.points)
        else:
            save_png(point_scatter(fake, fake) if module.points else image_grid(fake, nrow),
                     target)
    except OSError as e:
        raise UserError(f"cannot write {target}: {e.strerror or e} ({e.filename}); give a "
                        f"writable out=PATH") from None
    return target


def evaluate(path: str, images: str | None = None, seed: int = 0,
             memory_limit: float = MEMORY_LIMIT, **overrides) -> dict:
    """The metrics of a run's generator (n_fake samples drawn from `seed`: the same
    command prints the same figures), or of a folder of images, against its data."""
    import torch

    from ganrun.callbacks.metrics import PPL_STREAM
    from ganrun.config.schema import check_metrics
    from ganrun.data import load_dataset
    from ganrun.memory import check_evaluation, check_limit, data_shape
    from ganrun.metrics.evaluator import Evaluator
    from ganrun.metrics.registry import METRICS
    from ganrun.samples import generate_many

    check_seed(seed)
    check_limit(memory_limit)
    ckpt = checkpoint_of(path)
    module, cfg = load_module(ckpt)
    cfg.metrics = with_metric_defaults(cfg.metrics)
    for key, value in overrides.items():
        cfg.metrics[key] = value
    if not cfg.metrics.names:  # every metric that applies; ppl when asked for (G x 2 x pairs)
        cfg.metrics.names = [name for name, cls in METRICS.items() if cls.reads != "generator"]
    if images and "ppl" in cfg.metrics.names:
        raise UserError("ppl needs the generator (latent interpolations), not a folder of "
                        "images: leave it out of names")
    cfg.optimized_metric = None  # nothing is optimized here
    check_metrics(cfg)  # the options given here, as a training run's
    check_evaluation(cfg.metrics, data_shape(cfg.dataset, module.points), module.points,
                     memory_limit, None if images else cfg.model, ckpt.stat().st_size)
    fake = _folder_images(images, cfg.dataset) if images else None  # before the real data
    if fake is not None:  # the folder's count is n_fake: its guards and warnings are about it
        cfg.metrics.n_fake = len(fake)
    dataset = load_dataset(cfg.dataset)
    fake_name = f"images in {images}" if images else "generated samples"
    evaluator = Evaluator(cfg.metrics, dataset, cfg.dataset, fake_name=fake_name)
    with torch.random.fork_rng(devices=[]):  # seeded here, the caller's stream untouched
        torch.manual_seed(seed)
        if images:
            source = str(images)
        else:
            fake = generate_many(module, cfg.metrics.n_fake)
            source = f"{ckpt} (generator step {module.g_steps})"
        results = evaluator.evaluate(fake, fake_name)
        if evaluator.ppl_distance is not None:
            torch.manual_seed(seed + PPL_STREAM)  # its own latent pairs, apart from the samples'
            results["ppl"] = evaluator.path_length(module)
    record = {"source": source, **evaluator.protocol, "n_fake": len(fake), "seed": seed,
              "metrics": results}
    if images:  # in the run, else beside the folder; every evaluation in a file of its own
        folder = Path(images).expanduser().resolve()
        record = {"images": str(folder), "checkpoint": str(ckpt), **record}
        return {**record, "written": write_record(record, [_run_dir(ckpt), folder.parent],
                                                  "eval_images")}
    # eval.json, then eval_2.json, ...: an earlier evaluation is never replaced; a
    # read-only run: a warning, the results still printed
    return {**record, "written": write_record(record, [_run_dir(ckpt)], "eval")}


def _folder_images(images: str, dataset):
    """The images of an --images folder as the run's data (size, channels), in [-1, 1]:
    only for runs on images; unreadable files are skipped with a warning."""
    from omegaconf import OmegaConf

    from ganrun.config.schema import point_datasets
    from ganrun.data import load_dataset

    if dataset.name in point_datasets():
        raise UserError(f"--images {images}: dataset={dataset.name} is 2-D points, not images; "
                        f"leave --images out to evaluate the run's generator")
    folder = OmegaConf.create({"name": "image_folder", "root": images, "where": f"--images {images}",
                               "image_size": dataset.image_size, "channels": dataset.channels})
    return load_dataset(folder).data.float().div(127.5).sub(1.0)


def _main(fn, argv, allowed, usage) -> None:
    try:
        path, options, images = parse(argv, allowed, usage, images_ok=fn is evaluate)
        if "class" in options:  # a Python keyword: sample's class_
            options["class_"] = options.pop("class")
        result = fn(path, images=images, **options) if fn is evaluate else fn(path, **options)
    except UserError as e:
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        sys.exit(1)
    if isinstance(result, Path):
        print(result)
    else:
        print(f"{result['source']}: {result['n_fake']} samples vs {result['n_real']} real "
              f"({result['dataset']}, extractor {result['extractor']})")
        for name, value in result["metrics"].items():
            print(f"  {name:16s} {value:.6g}")
        if result.get("written"):
            print(f"written: {result['written']}")


def sample_main() -> None:
    _main(sample, sys.argv[1:], {"n": int, "out": str, "folder": boolean, "seed": int,
                                 "truncation": truncation_value, "class": int,
                                 "memory_limit": float}, USAGE_SAMPLE)


def eval_main() -> None:
    _main(evaluate, sys.argv[1:], {"n_fake": int, "n_real": int, "seed": int, "names": names_list,
                                   "extractor": str, "inception_weights": str,
                                   "ppl_samples": int, "ppl_sampling": str, "ppl_net": str,
                                   "lpips_weights": str, "memory_limit": float}, USAGE_EVAL)
