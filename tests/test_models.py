"""Models: shapes, the D = head(features) contract, conditioning, activations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from ganrun.models import build_models, make_activation

BASE = {"latent_dim": 8, "conditional": False, "embed_dim": 4, "activation": "relu",
        "activation_d": "leaky_relu", "leaky_slope": 0.2, "batch_norm_g": True,
        "batch_norm_d": True, "out_activation": "auto"}
MODELS = {
    "mlp": {"hidden_dims": [16, 16], "hidden_dims_d": None, "maxout_pieces": 5},
    "dcgan": {"base_channels": 4, "upsample": "transposed"},
    "resnet": {"g_channels": 8, "d_channels": 8},
}


def cfg(name: str, **kw):
    return OmegaConf.create({**BASE, **MODELS[name], "name": name, **kw})


CASES = [("mlp", (2,), {}), ("mlp", (1, 16, 16), {}), ("mlp", (3, 8, 8), {})] + [
    ("dcgan", (c, s, s), {"upsample": up}) for s in (8, 16, 32, 64) for c in (1, 3)
    for up in ("transposed", "nearest")] + [
    ("resnet", (c, s, s), {}) for s in (16, 32) for c in (1, 3)]


@pytest.mark.parametrize("name,shape,kw", CASES)
def test_shapes_and_the_head_of_features_contract(name, shape, kw):
    torch.manual_seed(0)
    G, D = build_models(cfg(name, **kw), shape)
    fake = G(torch.randn(5, 8))
    assert fake.shape == (5, *shape)
    f = D.features(fake)
    assert f.shape == (5, D.feature_dim) and D.in_shape == shape
    assert torch.allclose(D(fake), D.head(f).squeeze(1))
    D(fake).sum().backward()
    assert all(p.grad is not None for p in G.parameters())


def test_points_have_a_linear_output_and_images_tanh():
    G, _ = build_models(cfg("mlp"), (2,))
    assert isinstance(G.out_activation, nn.Identity)
    G, _ = build_models(cfg("dcgan"), (1, 8, 8))
    assert isinstance(G.out_activation, nn.Tanh) and G.net[-1] is G.out_activation


@pytest.mark.parametrize("name,shape", [("mlp", (1, 8, 8)), ("dcgan", (1, 16, 16)),
                                        ("resnet", (3, 16, 16))])
def test_conditional_models_use_the_labels(name, shape):
    torch.manual_seed(0)
    G, D = build_models(cfg(name, conditional=True), shape, num_classes=10)
    G.eval(), D.eval()
    z = torch.randn(4, 8)
    y1, y2 = torch.tensor([0, 1, 2, 3]), torch.tensor([5, 6, 7, 8])
    assert not torch.allclose(G(z, y1), G(z, y2))
    x = G(z, y1).detach()
    f = D.features(x)
    e = D.embed.weight.detach()
    expected = ((e[y1] - e[y2]) * f).sum(1)  # the projection term is all that differs
    assert torch.allclose(D(x, y1) - D(x, y2), expected, atol=1e-5)
    assert torch.allclose(D(x, y1), D.head(f).squeeze(1) + (e[y1] * f).sum(1), atol=1e-5)
    D(G(z, y1), y1).sum().backward()
    assert G.embed.weight.grad is not None and D.embed.weight.grad is not None
    assert G.embed.embedding_dim == 4 and D.embed.embedding_dim == D.feature_dim
    unconditional_G, unconditional_D = build_models(cfg(name), shape)
    assert not hasattr(unconditional_G, "embed") and not hasattr(unconditional_D, "embed")


@pytest.mark.parametrize("name,shape", [("mlp", (2,)), ("dcgan", (1, 8, 8)),
                                        ("resnet", (1, 16, 16))])
def test_a_replaced_head_is_used(name, shape):
    _, D = build_models(cfg(name), shape)
    x = torch.randn(3, *shape)
    assert isinstance(D.head, nn.Linear) and D.head.in_features == D.feature_dim

    class Constant(nn.Module):
        def forward(self, f):
            return torch.full((f.shape[0], 1), 7.0)

    D.head = Constant()
    assert torch.equal(D(x), torch.full((3,), 7.0))


@pytest.mark.parametrize("name,shape,feature_dim", [
    ("mlp", (2,), 16), ("dcgan", (1, 8, 8), 4 * 16), ("dcgan", (3, 32, 32), 16 * 16),
    ("resnet", (3, 16, 16), 8), ("resnet", (1, 64, 64), 8)])
def test_feature_sizes(name, shape, feature_dim):
    _, D = build_models(cfg(name), shape)
    assert D.feature_dim == feature_dim


@pytest.mark.parametrize("size,up_blocks", [(16, 2), (32, 3), (64, 4)])
def test_resnet_layout(size, up_blocks):
    G, D = build_models(cfg("resnet"), (3, size, size))
    assert len(G.blocks) == up_blocks  # 4x4 doubled to the image size
    assert D.blocks(torch.randn(2, 3, size, size)).shape[-2:] == (8, 8)
    assert not D.blocks[-1].first and isinstance(D.blocks[-1].pool, nn.Identity)
    assert not isinstance(D.blocks[-2].pool, nn.AvgPool2d)  # two plain blocks at 8x8


@pytest.mark.parametrize("name,reference", [
    ("relu", F.relu), ("leaky_relu", lambda t: F.leaky_relu(t, 0.3)), ("elu", F.elu),
    ("tanh", torch.tanh), ("sigmoid", torch.sigmoid)])
def test_activations(name, reference):
    t = torch.linspace(-3, 3, 13)
    assert torch.allclose(make_activation(name, 0.3)(t), reference(t))


def test_an_unknown_activation_raises():
    with pytest.raises(ValueError, match="unknown activation"):
        make_activation("swish", 0.2)


@pytest.mark.parametrize("name,shape", [("mlp", (2,)), ("dcgan", (1, 16, 16)),
                                        ("resnet", (1, 16, 16))])
def test_activation_choice_reaches_every_hidden_layer(name, shape):
    G, D = build_models(cfg(name, activation="elu", activation_d=None), shape)
    for net in (G, D):
        kinds = {type(m) for m in net.modules()}
        assert nn.ELU in kinds and nn.ReLU not in kinds and nn.LeakyReLU not in kinds
    G, D = build_models(cfg(name, activation="relu", activation_d="leaky_relu",
                            leaky_slope=0.1), shape)
    assert nn.LeakyReLU not in {type(m) for m in G.modules()}
    leaky = [m for m in D.modules() if isinstance(m, nn.LeakyReLU)]
    assert leaky and all(m.negative_slope == 0.1 for m in leaky)
    assert not any(isinstance(m, nn.ReLU) for m in D.modules())


@pytest.mark.parametrize("name,shape", [("mlp", (1, 8, 8)), ("dcgan", (3, 16, 16)),
                                        ("resnet", (3, 16, 16))])
def test_hidden_activations_are_never_shared(name, shape):
    G, D = build_models(cfg(name, activation="tanh", activation_d="tanh"), shape)
    assert isinstance(G.out_activation, nn.Tanh)
    activations = [m for net in (G, D) for m in net.modules() if isinstance(m, nn.Tanh)]
    assert len(activations) > 3
    assert len({id(m) for m in activations}) == len(activations)
    assert sum(m is G.out_activation for m in activations) == 1  # its own instance


def test_nearest_upsampling_has_no_transposed_conv_after_the_projection():
    G, _ = build_models(cfg("dcgan", upsample="nearest"), (1, 32, 32))
    transposed = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(transposed) == 1  # only the 1x1 -> 4x4 projection
    assert sum(isinstance(m, nn.Upsample) for m in G.modules()) == 3


def test_batch_norm_switches():
    G, D = build_models(cfg("dcgan", batch_norm_g=False, batch_norm_d=True), (1, 16, 16))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in G.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
    assert not isinstance(D.body[1], nn.BatchNorm2d)  # never on D's input layer
    _, D = build_models(cfg("mlp", batch_norm_d=True), (2,))
    assert [type(m) for m in D.body][:3] == [nn.Flatten, nn.Linear, nn.LeakyReLU]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in D.modules()) == 1
    G, D = build_models(cfg("resnet", batch_norm_g=True, batch_norm_d=True), (1, 16, 16))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.blocks[0].modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in D.blocks[1].modules())
    _, D = build_models(cfg("resnet", batch_norm_d=False), (1, 16, 16))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())


@pytest.mark.parametrize("name,size", [("dcgan", 24), ("dcgan", 4), ("resnet", 8),
                                       ("resnet", 24)])
def test_unsupported_sizes_raise(name, size):
    with pytest.raises(ValueError, match="power-of-two image size"):
        build_models(cfg(name), (1, size, size))


@pytest.mark.parametrize("overrides,match", [
    ({"name": "dcgan", "upsample": "bilinear"}, "upsample"),
    ({"name": "dcgan", "out_activation": "relu"}, "output activation"),
    ({"name": "mlp", "activation": "gelu"}, "activation")])
def test_bad_options_raise(overrides, match):
    with pytest.raises(ValueError, match=match):
        build_models(cfg(overrides.pop("name"), **overrides), (1, 16, 16))
