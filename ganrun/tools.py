"""`ganrun-sample` and `ganrun-eval`: work on a finished run, offline.

    ganrun-sample <run dir or ckpt> [n=64] [out=PATH] [folder=true] [seed=0] [truncation=0.7]
    ganrun-eval   <run dir or ckpt> [--images FOLDER] [n_fake=2000] [n_real=...] [extractor=...]

The generator is rebuilt from the configuration stored in the checkpoint, so
sampling never touches the dataset; evaluation reads the dataset (for the real
side) as the run's config names it, and the metrics as the run configured them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ganrun.errors import UserError
from ganrun.outputs import checkpoint_of

USAGE_SAMPLE = ("usage: ganrun-sample <run dir or checkpoint> [n=64] [out=PATH] [folder=true] "
                "[seed=0] [truncation=T]")
USAGE_EVAL = ("usage: ganrun-eval <run dir or checkpoint> [--images FOLDER] [n_fake=N] "
              "[n_real=N] [names=fid,kid,...] [extractor=auto|classifier|inception|random_conv|raw] "
              "[inception_weights=PATH] [ppl_samples=N] [ppl_sampling=end|full] "
              "[ppl_net=auto|lpips|extractor] [lpips_weights=PATH]")


def _parse(argv: list[str], allowed: dict[str, type], usage: str) -> tuple[str, dict, str | None]:
    """The positional path, key=value options (typed), and --images FOLDER."""
    path, options, images = None, {}, None
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            print(usage)
            sys.exit(0)
        if arg == "--images":
            if not args:
                raise UserError("--images needs a folder")
            images = args.pop(0)
        elif "=" in arg:
            key, value = arg.split("=", 1)
            if key not in allowed:
                raise UserError(f"unknown option {key}; valid: {', '.join(allowed)}")
            kind = allowed[key]
            try:
                options[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
            except ValueError:
                raise UserError(f"{key}={value}: expected {kind.__name__}") from None
        elif path is None:
            path = arg
        else:
            raise UserError(f"unexpected argument {arg}\n{usage}")
    if path is None:
        raise UserError(f"give a run directory or a checkpoint\n{usage}")
    return path, options, images


def load_module(ckpt: Path):
    """The GANModule of a checkpoint, weights loaded, on CPU, without its dataset."""
    import torch
    from omegaconf import OmegaConf

    from ganrun.module import GANModule

    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        saved = state["ganrun"]
        cfg = OmegaConf.create(saved["config"])
        shape = tuple(saved["data_shape"])
    except Exception as e:
        raise UserError(f"{ckpt}: not a ganrun checkpoint ({e.__class__.__name__}: {e})") from None
    module = GANModule(cfg, shape, num_classes=saved["num_classes"])
    weights = {k: v for k, v in state["state_dict"].items()
               if k not in ("fixed_noise", "fixed_labels")}  # kept by ganrun <= 0.1
    module.load_state_dict(weights)
    module.on_load_checkpoint(state)  # steps, regularizers' state (DynGAN's partitions)
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


def sample(path: str, n: int = 64, out: str | None = None, folder: bool = False, seed: int = 0,
           truncation: float | None = None) -> Path:
    import torch

    from ganrun.samples import generate_many, image_grid, point_scatter, save_png

    ckpt = checkpoint_of(path)
    module, cfg = load_module(ckpt)
    torch.manual_seed(seed)
    if truncation is not None:
        cfg.sample.truncation = truncation
    fake = generate_many(module, n)
    target = Path(out) if out else _run_dir(ckpt) / "samples" / (
        f"sample_{module.g_steps:07d}" + ("" if folder else ".png"))
    if folder:
        target.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(fake):
            picture = point_scatter(fake, image[None]) if module.points else image_grid(image[None], 1)
            save_png(picture, target / f"{i:06d}.png")
    else:
        nrow = n // module.num_classes if module.num_classes and not module.partitioner else None
        save_png(point_scatter(fake, fake) if module.points else image_grid(fake, nrow), target)
    return target


def evaluate(path: str, images: str | None = None, **overrides) -> dict:
    import torch

    from ganrun.data import load_dataset
    from ganrun.metrics.evaluator import Evaluator
    from ganrun.samples import generate_many
    from ganrun.schema import METRIC_NAMES, check_metrics

    ckpt = checkpoint_of(path)
    module, cfg = load_module(ckpt)
    cfg.metrics = with_metric_defaults(cfg.metrics)
    for key, value in overrides.items():
        cfg.metrics[key] = value
    if not cfg.metrics.names:  # every metric that applies; ppl when asked for (G x 2 x pairs)
        cfg.metrics.names = [name for name in METRIC_NAMES if name != "ppl"]
    if images and "ppl" in cfg.metrics.names:
        raise UserError("ppl needs the generator (latent interpolations), not a folder of "
                        "images: leave it out of names")
    cfg.optimized_metric = None  # nothing is optimized here
    check_metrics(cfg)  # the options given here, as a training run's
    dataset = load_dataset(cfg.dataset)
    evaluator = Evaluator(cfg.metrics, dataset, cfg.dataset)
    if images:
        from omegaconf import OmegaConf

        folder = OmegaConf.create({"name": "image_folder", "root": images,
                                   "image_size": cfg.dataset.image_size,
                                   "channels": cfg.dataset.channels})
        fake = load_dataset(folder).data.float().div(127.5).sub(1.0)
        source = str(images)
    else:
        fake = generate_many(module, cfg.metrics.n_fake)
        source = f"{ckpt} (generator step {module.g_steps})"
    results = evaluator.evaluate(fake, f"images in {images}" if images else "generated samples")
    if evaluator.ppl_distance is not None:
        torch.manual_seed(1)  # its own latent pairs, apart from the samples'
        results["ppl"] = evaluator.path_length(module)
    record = {"source": source, **evaluator.protocol, "n_fake": len(fake), "metrics": results}
    if not images:
        out = _run_dir(ckpt) / "eval.json"
        out.write_text(json.dumps(record, indent=2) + "\n")
    return record


def _main(fn, argv, allowed, usage) -> None:
    try:
        path, options, images = _parse(argv, allowed, usage)
        result = fn(path, images=images, **options) if images is not None or fn is evaluate \
            else fn(path, **options)
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


def sample_main() -> None:
    _main(sample, sys.argv[1:], {"n": int, "out": str, "folder": bool, "seed": int,
                                 "truncation": float}, USAGE_SAMPLE)


def eval_main() -> None:
    _main(evaluate, sys.argv[1:], {"n_fake": int, "n_real": int, "names": names_list,
                                   "extractor": str, "inception_weights": str,
                                   "ppl_samples": int, "ppl_sampling": str, "ppl_net": str,
                                   "lpips_weights": str}, USAGE_EVAL)


def names_list(value: str) -> list[str]:
    """names=fid,kid: the metrics to compute, checked against metrics.names' choices."""
    from ganrun.errors import one_of
    from ganrun.schema import METRIC_NAMES

    names = [n.strip() for n in value.strip("[]").split(",") if n.strip()]
    for name in names:
        one_of("names", name, METRIC_NAMES)
    return names
