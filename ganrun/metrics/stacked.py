"""The mode count of stacked data (stacked_digits, stacked_mnist: three digits, one per
channel, 1000 modes), as VEEGAN and PacGAN report it (PacGAN's code,
fjxmlzn/PacGAN stacked_MNIST_experiments, model.py `log_metrics`): each generated
sample's mode is the three classes its base set's classifier reads in its channels;
`modes` counts the modes that hold at least one sample, `reverse_kl` is
KL(generated mode histogram || uniform over the 1000 modes), in nats (PacGAN's "KL").
PacGAN reads 26,000 samples (protocol=pacgan_stacked sets metrics.n_fake).

The classifier is ganrun's (ganrun.metrics.extractors.ClassifierNet) trained on the
base set's labels and cached like the classifier extractor's: scikit-learn's digits
at the image size for stacked_digits, MNIST for stacked_mnist. A mode count is only
as good as the classifier, so its accuracy per channel on held-out real stacked
samples (three of the digits it never trained on, drawn as the dataset draws them)
is recorded with the numbers (metrics.jsonl's protocol, `stacked_modes`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ganrun.metrics.registry import METRICS, Metric

if TYPE_CHECKING:
    from torch import Tensor

HELD_OUT = 2000  # held-out real stacked samples the classifier's accuracy is measured on


def stacked_modes(classes: Tensor) -> dict[str, float]:
    """`classes` (N, C): each sample's class per channel -> {"modes": covered modes out
    of 10**C, "reverse_kl": KL(histogram || uniform)}."""
    import torch

    from ganrun.data.stacked import DIGITS, mode_of

    n, channels = classes.shape
    total = DIGITS**channels
    counts = torch.bincount(mode_of(classes), minlength=total).double()
    p = counts[counts > 0] / n
    return {"modes": int((counts > 0).sum()), "reverse_kl": float((p * (p * total).log()).sum())}


def histogram_picture(classes: Tensor, title: str) -> object:
    """The generated samples' histogram over the 1000 modes as uint8 (H, W, 3): one bar
    per mode (in mode order), the uniform share drawn across."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from ganrun.data.stacked import mode_of

    counts = torch.bincount(mode_of(classes), minlength=1000).numpy()
    fig, ax = plt.subplots(figsize=(8, 2.5), dpi=80)
    ax.bar(np.arange(1000), counts, width=1.0, color="tab:blue")
    ax.axhline(counts.sum() / 1000, color="tab:red", linewidth=1, label="uniform")
    ax.set_xlim(-0.5, 999.5)
    ax.set_xlabel("mode (100 x first digit + 10 x second + third)")
    ax.set_ylabel("samples")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.canvas.draw()
    picture = np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()
    plt.close(fig)
    return picture


@METRICS.register
class StackedModes(Metric):
    """Modes covered out of 1000 and KL from uniform, by the base set's classifier read
    channel by channel."""

    name = "stacked_modes"
    outputs = {"modes": "higher", "reverse_kl": "lower"}
    quality = {"modes": ("reverse_kl",)}
    reads = "images"
    sides = ()  # it counts samples: no minimum

    def __init__(self, cfg):
        super().__init__(cfg)
        self.net = self.accuracy = self.classes = self.last = None

    def skipped(self, extractor, dataset=None):
        if dataset is None:
            return None
        from ganrun.data import DATASETS

        source = DATASETS.get(dataset)
        if source is None or not source.stacked:
            stacked = ", ".join(name for name, cls in DATASETS.items() if cls.stacked)
            return f"for stacked data ({stacked})"
        return None

    def prepare(self, evaluator) -> None:
        from ganrun.metrics.extractors import ClassifierNet, load_cached

        base = evaluator.dataset.base
        path = evaluator.classifier(base)
        saved = load_cached(path)
        self.net = ClassifierNet(**saved["spec"])
        self.net.load_state_dict(saved["state_dict"])
        self.net.requires_grad_(False).eval()
        self.classifier_id = path.stem
        self.accuracy = held_out_accuracy(self, base, self.cfg.classifier_holdout)

    @property
    def device(self):
        return next(self.net.parameters()).device

    def read(self, images: Tensor) -> Tensor:
        """(N, 3) the class of each channel."""
        from ganrun.metrics.extractors import resized

        n, channels = images.shape[:2]
        self.net.to(images.device)
        one = resized(images.float().clamp(-1, 1).flatten(0, 1).unsqueeze(1), self.net.size)
        return self.net(one)[1].argmax(1).view(n, channels)

    def record(self) -> dict:
        return {"classifier": self.classifier_id, **self.accuracy}

    def compute(self, samples):
        self.classes = samples.readings[self.name]
        self.last = stacked_modes(self.classes)
        return self.last

    def picture(self):
        if self.classes is None:
            return None
        last = self.last
        return histogram_picture(self.classes, f"{len(self.classes)} samples over the 1000 "
                                 f"modes: {last['modes']} covered, KL {last['reverse_kl']:.3f}")


def held_out_accuracy(metric: StackedModes, base, holdout: float) -> dict:
    """The classifier's accuracy on HELD_OUT real stacked samples made of the base set's
    held-out digits (the split it was trained without): per channel, and the share of
    samples whose whole mode it reads right."""
    import torch

    from ganrun.data.sources import Dataset
    from ganrun.data.stacked import stack
    from ganrun.metrics.extractors import holdout_split

    test, _ = holdout_split(len(base), holdout)
    held_out = stack(Dataset("held_out", base.data[test], base.labels[test]), "held_out",
                     HELD_OUT, seed=1)
    images = held_out.data
    if images.dtype == torch.uint8:
        images = images.float().div(127.5).sub(1.0)
    with torch.no_grad():
        read = torch.cat([metric.read(batch.to(metric.device)).cpu()
                          for batch in images.split(500)])
    labels = held_out.labels
    truth = torch.stack([labels // 100, labels // 10 % 10, labels % 10], dim=1)
    right = read == truth
    return {"accuracy": [round(float(a), 4) for a in right.double().mean(0)],
            "mode_accuracy": round(float(right.all(1).double().mean()), 4),
            "held_out": HELD_OUT}
