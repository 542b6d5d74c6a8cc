"""FleetModule: GANModule's step for M members at once.

The step is GANModule's own; a fleet changes only what must be per member:
- G and D are the members' networks stacked (ganrun.fleet.stack), their samples in
  the batch dimension, member k's at rows k*B..(k+1)*B;
- every random draw of the step (latents, labels) comes from member k's own stream,
  a generator that starts where its standalone run's global stream stands when
  training starts, so member k draws exactly what it would alone;
- the losses are each member's own, on its own rows (its numbers: lsgan's a, b, c),
  stacked into (M,): their sum is what is differentiated, so each member's
  parameters get its own loss's gradient;
- the optimizers are stacked (ganrun.fleet.optim), each member at the learning rate
  its own torch optimizer holds now (schedules, roll-backs);
- the step statistics are (M,) per name (FleetStatistics), read by each member's
  callbacks as its own (MemberStatistics), and the health probe's evidence is split
  among the members that armed one.

The members themselves are plain GANModules ("shells", ganrun.fleet.members) whose
parameters and buffers are views into the stack: what the callbacks read and write
of a member (samples, metrics, checkpoints) is the live state of that member.
"""

from __future__ import annotations

import torch
from pytorch_lightning.utilities.types import LRSchedulerConfig
from torch import Tensor, nn

from ganrun.batch import members
from ganrun.fleet.layers import STACKED, member_view
from ganrun.fleet.optim import link_member_optimizer, stacked_optimizer
from ganrun.fleet.stack import stack_models
from ganrun.regularizers.base import Regularizer
from ganrun.samples import sample_latent
from ganrun.stepstats import StepStatistics
from ganrun.training.module import GANModule


class FleetStatistics(StepStatistics):
    """Step statistics whose values are (M,): one per member. Members read their
    column (MemberStatistics); the sums start again at the next step after a read."""

    def __init__(self, members: int):
        super().__init__()
        self.members = members
        self._means: tuple[list[str], Tensor] | None = None
        self._finite: list[bool] | None = None  # per member, since the last step

    def end_step(self) -> None:
        self._finite = None
        if self._means is not None:  # read after the last step: start the sums again
            self._sums.clear()
            self._counts.clear()
            self.steps, self._means = 0, None
        super().end_step()

    def member_means(self) -> tuple[list[str], Tensor]:
        """(names, means since the last read (names, M), on the host): one transfer
        for all members."""
        if self._means is None:
            names, means = self.stacked()
            self._means = (names, means.float().cpu().reshape(len(names), self.members))
        return self._means

    def member_finite(self, k: int) -> bool:
        """Whether member k's sums are finite: one host sync for all members."""
        if self._finite is None:
            flags = [torch.isfinite(total).reshape(total.shape[0], self.members).all(0)
                     for total in self._sums.values()]
            self._finite = (torch.stack(flags).all(0).tolist() if flags
                            else [True] * self.members)
        return self._finite[k]

    def clear(self) -> None:
        super().clear()
        self._means = self._finite = None


class MemberStatistics(StepStatistics):
    """Member k's view of the fleet's statistics, with notes of its own (its health
    probe's values)."""

    def __init__(self, fleet: FleetStatistics, k: int):
        self.fleet, self.k = fleet, k
        super().__init__()

    @property
    def steps(self) -> int:
        return self.fleet.steps

    @steps.setter
    def steps(self, value: int) -> None:  # counted by the fleet
        pass

    def stacked(self) -> tuple[list[str], Tensor]:
        names, means = self.fleet.member_means()
        own_names, own = super().stacked()  # the notes
        column = means[:, self.k]
        if own_names:
            return names + own_names, torch.cat([column, own.float().cpu()])
        return names, column

    def all_finite(self) -> bool:
        return self.fleet.member_finite(self.k)


def _one_or_each(values: list[float]) -> float | Tensor:
    return values[0] if len(set(values)) == 1 else torch.tensor(values, dtype=torch.float64)


class MemberLosses:
    """The members' losses (one kind, each with its own numbers) on their own rows:
    d_loss and g_loss give (M,)."""

    def __init__(self, losses: list):
        self.losses = losses
        first = losses[0]
        for key in ("name", "space", "uses_targets", "g_uses_real", "decision"):
            setattr(self, key, getattr(first, key))
        # a number, or (M,) where members' differ (lsgan's a and b); a regularizer may
        # make them per sample (M * B,)
        self.real_target = _one_or_each([loss.real_target for loss in losses])
        self.fake_target = _one_or_each([loss.fake_target for loss in losses])

    def _rows(self, t, k: int):
        if t is None or isinstance(t, float | int) or t.dim() == 0:
            return t
        if t.numel() == len(self.losses):
            return t[k]
        return t.chunk(len(self.losses))[k]

    def d_loss(self, real_out: Tensor, fake_out: Tensor, real_target=None, fake_target=None):
        return torch.stack([loss.d_loss(self._rows(real_out, k), self._rows(fake_out, k),
                                        self._rows(real_target, k), self._rows(fake_target, k))
                            for k, loss in enumerate(self.losses)])

    def g_loss(self, fake_out: Tensor, real_out: Tensor | None = None):
        return torch.stack([loss.g_loss(self._rows(fake_out, k), self._rows(real_out, k))
                            for k, loss in enumerate(self.losses)])


def member_grad_norms(net: nn.Module, members: int) -> Tensor:
    """Each member's gradient norm over all of its parameters in the stacked `net`: (M,)."""
    squares = [p.grad.reshape(members, -1).pow(2).sum(1) for p in net.parameters()
               if p.grad is not None]
    if not squares:
        return torch.zeros(members)
    return torch.stack(squares).sum(0).sqrt()


class FleetProbe:
    """The health probe of a fleet's step: records what the step hands a probe for
    all members, and gives each member that armed its own probe (callbacks.health)
    its rows and gradient norms."""

    def __init__(self, fleet: FleetModule):
        self.fleet = fleet
        self.outputs: tuple[Tensor, Tensor] | None = None
        self.norms: dict[str, Tensor] = {}

    def record_outputs(self, real_out: Tensor, fake_out: Tensor) -> None:
        self.outputs = (real_out.detach(), fake_out.detach())

    def record_grads(self, name: str, net: nn.Module) -> None:
        self.norms[name] = member_grad_norms(net, self.fleet.members)

    def tensors(self, fleet) -> dict[str, Tensor]:
        m = fleet.members
        real, fake = (t.chunk(m) for t in self.outputs)
        for k, shell in enumerate(fleet.shells):
            probe = shell.probe
            if probe is None:
                continue
            probe.outputs = (real[k], fake[k])
            probe.norms = {name: norms[k] for name, norms in self.norms.items()}
            for name, value in probe.tensors(shell).items():
                shell.statistics.note(name, value)
        return {}  # noted in each member's own statistics


def stacked_pairs(fleet_net: nn.Module, member_net: nn.Module):
    """(stacked layer, name, stacked tensor, member layer) for every parameter and
    buffer of the stacked layers of `fleet_net`, with the member's layer of that name."""
    kinds = tuple(STACKED.values())
    for path, layer in fleet_net.named_modules():
        if not isinstance(layer, kinds):
            continue
        own = member_net.get_submodule(path)
        for name, tensor in [*layer.named_parameters(), *layer.named_buffers()]:
            if tensor is not None:
                yield layer, name, tensor, own


class FleetModule(GANModule):
    """GANModule's step for the members `shells` (GANModules of one structure), each
    drawing from its own `streams` generator."""

    def __init__(self, shells: list[GANModule], streams: list[torch.Generator]):
        first = shells[0]
        with torch.random.fork_rng(devices=[]):  # the fleet's own networks are replaced
            super().__init__(first.cfg, first.data_shape,
                             num_classes=first.num_classes if not first.labeller else 0)
        self.__dict__["shells"] = list(shells)  # not submodules: their weights are ours
        for k, shell in enumerate(shells):  # (ganrun.fleet.members.MemberModule)
            shell.__dict__["fleet"], shell.index = self, k
        self.members = len(shells)
        self.streams = streams
        self.G = stack_models([s.G for s in shells])
        self.D = stack_models([s.D for s in shells])
        self.loss = MemberLosses([s.loss for s in shells])
        for reg in self.regularizers:  # on the stacked networks
            reg.rewrap(self.G, self.D)
        self.G_sampler = next((net for net in (r.sampler() for r in self.regularizers)
                               if net is not None), None)
        self.batch_size = first.batch_size * self.members
        self.statistics = FleetStatistics(self.members)
        for k, shell in enumerate(shells):
            shell.statistics = MemberStatistics(self.statistics, k)
        self.member_optimizers: dict[str, list] = {"G": [], "D": []}
        self.member_schedulers: list = []
        self._member_numbers(shells)
        self.active = [True] * self.members  # members still training (ganrun.fleet.members)
        self.max_steps = 2 ** 62  # the members' budgets end the fleet, not its own count

    def _member_numbers(self, shells: list[GANModule]) -> None:
        """A regularizer's number that members set to values of their own (its
        `member_numbers`) becomes a tensor (M,), applied member by member."""
        for i, reg in enumerate(self.regularizers):
            for key in type(reg).member_numbers:
                values = [float(getattr(s.regularizers[i], key)) for s in shells]
                if len(set(values)) > 1:  # in double: rounded once, to the step's type
                    setattr(reg, key, torch.tensor(values, dtype=torch.float64))

    # --- the members' views ------------------------------------------------------------

    def bind_members(self) -> None:
        """Point every member's parameters and buffers at its part of the stack (on the
        device the fleet trains on), so the members are the fleet's live state."""
        for k, shell in enumerate(self.shells):
            pairs = [(self.G, shell.G), (self.D, shell.D)]
            if self.G_sampler is not None:  # a regularizer's copy of G that samples
                pairs.append((self.G_sampler, shell.G_sampler))
            for fleet_net, own_net in pairs:
                for layer, name, tensor, own in stacked_pairs(fleet_net, own_net):
                    view = member_view(layer, name, tensor.data, k)
                    owner, _, leaf = name.rpartition(".")
                    holder = own.get_submodule(owner) if owner else own
                    if isinstance(tensor, nn.Parameter):
                        setattr(holder, leaf, nn.Parameter(view, requires_grad=False))
                    else:
                        setattr(holder, leaf, view)
            shell._device = self.device

    def configure_optimizers(self):
        return None  # stacked ones, made with the members' own in prepare_members

    def on_train_start(self) -> None:
        for reg in self.regularizers:
            reg.attach(self)
        self._direct = True

    def prepare_members(self) -> None:
        """Once the fleet is on its device (before any member's callback starts
        training): the members' views, the stacked optimizers, and each member's own
        torch optimizers and schedules over its views, linked to its part of the
        stacked ones (its trainer holds them, its checkpoint saves them)."""
        self.bind_members()
        dtype = next(self.G.parameters()).dtype
        for reg in self.regularizers:  # the members' own numbers on the fleet's device
            for key in type(reg).member_numbers:
                value = getattr(reg, key)
                if isinstance(value, Tensor):
                    setattr(reg, key, value.to(self.device, dtype))
        self.member_optimizers = {"G": [], "D": []}
        self.member_schedulers = []
        cfgs = [s.cfg.optim for s in self.shells]
        self.optimizers_in_use = [
            stacked_optimizer(cfgs, list(self.G.parameters()), [c.lr_g for c in cfgs]),
            stacked_optimizer(cfgs, list(self.D.parameters()), [c.lr_d for c in cfgs])]
        for k, shell in enumerate(self.shells):
            made = shell.configure_optimizers()  # the member's own, over its views
            optimizers, schedulers = made if isinstance(made, tuple) else (made, [])
            for net, optimizer, stacked in zip("GD", optimizers, self.optimizers_in_use,
                                               strict=True):
                self.member_optimizers[net].append(optimizer)
                link_member_optimizer(optimizer, stacked, k,
                                      [(layer, name, tensor, own.get_parameter(name)) for
                                       layer, name, tensor, own in stacked_pairs(
                                           getattr(self, net), getattr(shell, net))
                                       if isinstance(tensor, nn.Parameter)])
            self.member_schedulers += schedulers
            shell.optimizers_in_use = optimizers
            shell.trainer.optimizers = optimizers
            shell.trainer.strategy.lr_scheduler_configs = [
                LRSchedulerConfig(s) for s in schedulers]

    def lr_schedulers(self):
        return self.member_schedulers

    # --- the step's per-member parts ----------------------------------------------------

    def sample_latent(self, n: int) -> Tensor:
        b = n // self.members
        return torch.cat([sample_latent(b, self.latent_dim, self.latent, generator=g)
                          for g in self.streams]).to(self.device)

    def sample_labels(self, n: int) -> Tensor | None:
        if not self.num_classes:
            return None
        b = n // self.members
        return torch.cat([torch.randint(self.num_classes, (b,), generator=g)
                          for g in self.streams]).to(self.device)

    def _update(self, optimizer, loss: Tensor, net: str) -> None:
        optimizer.hyper["lr"] = [o.param_groups[0]["lr"] for o in self.member_optimizers[net]]
        super()._update(optimizer, loss.sum(), net)

    def training_step(self, batch, batch_idx: int) -> None:
        armed = any(shell.probe is not None for shell in self.shells)
        self.probe = FleetProbe(self) if armed else None
        self.checkpoint_asked = any(shell.checkpoint_asked for shell in self.shells)
        with members(self.streams):  # draws and means per member (ganrun.batch)
            super().training_step(batch, batch_idx)
        # Each member counts its own steps: one rolled back (train.on_diverge=restore)
        # stands behind the others and trains on after they finish.
        images = batch[0] if isinstance(batch, list | tuple) else batch
        for shell, active in zip(self.shells, self.active, strict=True):
            if not active:
                continue
            shell.g_steps += 1
            shell.images_seen += images.shape[0] // self.members
            shell.trained_step = shell.g_steps
            shell.finished = shell.g_steps >= shell.max_steps
            shell.stopping = shell.finished or self.stopping
            shell.checkpoint_now = self.checkpoint_now

    # --- the regularizers' own state, member by member ----------------------------------

    def _part(self, k: int, copy: bool):
        """part(param, t): member k's part of a tensor shaped like a stacked parameter."""
        if not hasattr(self, "_places"):
            self._places = {id(tensor): (layer, name)
                            for net in (self.G, self.D, self.G_sampler) if net is not None
                            for layer, name, tensor, _ in stacked_pairs(net, net)}

        def part(param: Tensor, t: Tensor) -> Tensor:
            layer, name = self._places[id(param)]
            view = member_view(layer, name, t, k)
            return view.clone(memory_format=torch.contiguous_format) if copy else view
        return part

    def give_member_state(self, k: int) -> None:
        """Member k's part of the regularizers' state into its own regularizers (before
        its checkpoint is written: callbacks.checkpoint)."""
        part = self._part(k, copy=True)
        for reg, own in zip(self.regularizers, self.shells[k].regularizers, strict=True):
            state = reg.member_state(part)
            if state:
                own.load_state_dict(state)

    def take_member_state(self, k: int) -> None:
        """Member k's regularizers' state into its part of the fleet's (after its
        checkpoint was loaded: a resumed fleet, a member's roll-back). State the members
        share (counts of updates) is taken when the fleet resumes, not at one member's
        roll-back, which would move the others: that member then goes on with the
        fleet's counts."""
        part = self._part(k, copy=False)
        resuming = self.g_steps == 0
        for reg, own in zip(self.regularizers, self.shells[k].regularizers, strict=True):
            state = own.state_dict()
            shared = type(reg).load_member_state is Regularizer.load_member_state
            if state and (resuming or not shared):
                reg.load_member_state(state, part)
