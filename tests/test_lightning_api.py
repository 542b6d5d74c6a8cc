"""Lightning's private API, as ganrun.training.launcher relies on it, still there.

launcher.py is the one module that touches Lightning's private names (its docstring
lists them). A Lightning release may rename or reshape any of them without notice;
these tests fail first, naming the installed version and the name that changed, and
check that the installed version lies in the range pyproject.toml pins.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from importlib.metadata import version
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
LIGHTNING = version("pytorch-lightning")

# (module, private name) pairs launcher.py imports or reaches.
PRIVATE_NAMES = [
    ("pytorch_lightning.strategies.launchers.subprocess_script", "_SubprocessScriptLauncher"),
    ("lightning_fabric.utilities.distributed", "_set_num_threads_if_needed"),
    ("pytorch_lightning.trainer.connectors.checkpoint_connector", "_CheckpointConnector"),
]


def _private(module: str, name: str):
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"Lightning {LIGHTNING}: {module}.{name}, which ganrun.training.launcher "
                    f"relies on, is gone ({exc})")


def _expect_parameters(owner: str, function, names: list[str]) -> None:
    """`function` exists and takes exactly these parameters (self excluded), in order."""
    if function is None:
        pytest.fail(f"Lightning {LIGHTNING}: {owner} is gone; ganrun.training.launcher "
                    f"overrides or calls it")
    found = [p for p in inspect.signature(function).parameters if p != "self"]
    assert found == names, (f"Lightning {LIGHTNING}: {owner} now takes {found}, "
                            f"ganrun.training.launcher passes {names}")


def _pinned_range() -> str:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (pin,) = [d for d in project["dependencies"] if d.startswith("pytorch-lightning")]
    return pin.removeprefix("pytorch-lightning").strip()


def test_installed_lightning_lies_in_the_pinned_range():
    from packaging.specifiers import SpecifierSet

    pinned = SpecifierSet(_pinned_range())
    assert any(s.operator == "<" for s in pinned), (
        f"pyproject.toml pins pytorch-lightning{pinned} with no upper bound; "
        "ganrun.training.launcher relies on its private API")
    assert LIGHTNING in pinned, (
        f"Lightning {LIGHTNING} is installed, pyproject.toml pins pytorch-lightning{pinned}: "
        "run this file and tests/test_distributed.py on it, then move the pin")


@pytest.mark.parametrize(("module", "name"), PRIVATE_NAMES)
def test_every_private_name_the_launcher_imports_exists(module, name):
    _private(module, name)


def test_the_methods_the_launcher_overrides_or_calls_take_what_it_passes():
    from pytorch_lightning.strategies import DDPStrategy

    launcher = _private(*PRIVATE_NAMES[0])
    for method, parameters in [("__init__", ["cluster_environment", "num_processes", "num_nodes"]),
                               ("launch", ["function", "args", "trainer", "kwargs"]),
                               ("kill", ["signum"]),
                               ("_call_children_scripts", []),
                               ("_check_can_spawn_children", [])]:
        _expect_parameters(f"_SubprocessScriptLauncher.{method}",
                           getattr(launcher, method, None), parameters)
    _expect_parameters("DDPStrategy._configure_launcher",
                       getattr(DDPStrategy, "_configure_launcher", None), [])
    _expect_parameters("lightning_fabric.utilities.distributed._set_num_threads_if_needed",
                       _private(*PRIVATE_NAMES[1]), ["num_processes"])
    _expect_parameters("_CheckpointConnector.dump_checkpoint",
                       getattr(_private(*PRIVATE_NAMES[2]), "dump_checkpoint", None),
                       ["weights_only"])


def test_lightning_still_asks_the_strategy_for_its_launcher(tmp_path):
    """The overrides are called, not only present: a Trainer given ganrun's strategy
    launches with ganrun's launcher (else Lightning's own would rerun the command line,
    Hydra and all, in every process)."""
    import pytorch_lightning as pl

    from ganrun.training.launcher import GanrunDDPStrategy, WorkerLauncher

    trainer = pl.Trainer(strategy=GanrunDDPStrategy(tmp_path), accelerator="cpu", devices=2,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    launcher = trainer.strategy.launcher
    assert isinstance(launcher, WorkerLauncher), (
        f"Lightning {LIGHTNING}: DDPStrategy's launcher is {type(launcher).__name__}; "
        "GanrunDDPStrategy._configure_launcher was not called")
    assert launcher.procs == [], f"Lightning {LIGHTNING}: the launcher keeps no `procs` list"
    assert isinstance(trainer._checkpoint_connector, _private(*PRIVATE_NAMES[2])), (
        f"Lightning {LIGHTNING}: Trainer._checkpoint_connector is gone")


def test_a_checkpoint_made_alone_holds_what_save_checkpoint_writes(tmp_path):
    import pytorch_lightning as pl
    import torch

    from ganrun.training.launcher import WorkerLauncher

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters())

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 2)))
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, default_root_dir=tmp_path,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(Tiny(), data)
    alone = WorkerLauncher.checkpoint_alone(trainer)
    trainer.save_checkpoint(tmp_path / "saved.ckpt")
    saved = torch.load(tmp_path / "saved.ckpt", weights_only=False)
    assert alone.keys() == saved.keys()
    assert alone["global_step"] == saved["global_step"] == 1
    assert alone["optimizer_states"]  # weights_only=False: the optimizer's state, to resume


LIGHTNING_PACKAGES = ("pytorch_lightning", "lightning_fabric", "lightning")
# Names the package gives Lightning's objects: `trainer._x` or `self.strategy._x` reach
# into Lightning; `logger.experiment._x` (torch's SummaryWriter) does not.
LIGHTNING_OBJECTS = {"trainer", "strategy", "launcher", "accelerator", "precision_plugin",
                     "checkpoint_io", "cluster_environment", "fit_loop", "lightning_module"}
ADAPTER = REPO / "ganrun" / "training" / "launcher.py"


def _private_uses(path: Path) -> list[str]:
    """Where `path` imports a private Lightning name or reaches a private attribute of a
    Lightning object, as file:line: what."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
                LIGHTNING_PACKAGES):
            private = [a.name for a in node.names if a.name.startswith("_")]
            if private or any(part.startswith("_") for part in node.module.split(".")):
                found.append(f"{node.lineno}: from {node.module} import "
                             f"{', '.join(private) or '...'}")
        elif (isinstance(node, ast.Attribute) and node.attr.startswith("_")
              and not node.attr.startswith("__")):
            owner = node.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", None)
            if name in LIGHTNING_OBJECTS:
                found.append(f"{node.lineno}: {name}.{node.attr}")
    return [f"{path.relative_to(REPO)}:{where}" for where in found]


def test_only_the_launcher_touches_lightnings_private_api():
    """Every private Lightning name is used in ganrun/training/launcher.py, nowhere else:
    imports, attributes of the trainer and strategy, overridden private methods."""
    import pytorch_lightning  # noqa: F401  (classes below are compared with its)

    uses = [use for path in sorted((REPO / "ganrun").rglob("*.py")) if path != ADAPTER
            for use in _private_uses(path)]
    for module_name in sorted(m.name for m in pkgutil.walk_packages(
            [str(REPO / "ganrun")], "ganrun.")):
        module = importlib.import_module(module_name)
        for cls in vars(module).values():
            if not (inspect.isclass(cls) and cls.__module__ == module_name) or (
                    module_name == "ganrun.training.launcher"):
                continue
            theirs = [base for base in cls.__mro__[1:]
                      if base.__module__.split(".")[0] in LIGHTNING_PACKAGES]
            uses += [f"{module_name}.{cls.__name__}.{name}: overrides Lightning's private "
                     f"method" for name in vars(cls)
                     if name.startswith("_") and not name.startswith(("__", "_abc_"))
                     and any(hasattr(base, name) for base in theirs)]
    assert not uses, ("Lightning's private API outside ganrun/training/launcher.py (move it "
                      "there behind a public function):\n  " + "\n  ".join(uses))
