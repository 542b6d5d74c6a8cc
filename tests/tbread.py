"""Read TensorBoard event files back: scalars, images and the HParams session."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2


def scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def image_steps(tb_dir: Path, tag: str = "samples") -> list[int]:
    acc = EventAccumulator(str(tb_dir), size_guidance={"images": 0})
    acc.Reload()
    return [e.step for e in acc.Images(tag)]


def hparams(tb_dir: Path) -> tuple[dict, list[str]]:
    """(hparam values of the run's session, metric tags of the experiment)."""
    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    values, metrics = {}, []
    for blob in content.values():
        data = plugin_data_pb2.HParamsPluginData.FromString(blob)
        if data.HasField("session_start_info"):
            for key, value in data.session_start_info.hparams.items():
                kind = value.WhichOneof("kind")
                values[key] = getattr(value, kind)
        if data.HasField("experiment"):
            metrics = [m.name.tag for m in data.experiment.metric_infos]
    return values, metrics
