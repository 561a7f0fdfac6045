"""The AVB MNIST networks: shapes, the implicit marker, and the basis encoder's moments."""

import pyro.poutine as poutine
import torch

from pyrogen.models.avb_mnist import (
    BasisNoiseEncoder,
    ImplicitVAE,
    InnerProductCritic,
    NoiseEncoder,
    build,
)

Z = 5.0  # standard errors allowed


def test_basis_encoder_moments_are_those_of_its_draws() -> None:
    """One image repeated n times: the rows' mean of z is the reported mean exactly (the
    moments of the v_k are the batch's), and their variance is the reported one up to the
    cross terms 2 sum_{k<j} a_k a_j cov(v_k, v_j) between independent v_k, whose standard
    error sqrt(2 ((sum a_k^2 s_k^2)^2 - sum a_k^4 s_k^4) / n) comes from the replayed
    noise."""
    torch.manual_seed(0)
    encoder = BasisNoiseEncoder(z_dim=4, num_basis=6, x_dim=20)
    with torch.no_grad():  # a mean that is not ~0, weights a_k of different sizes
        encoder.mean.bias.copy_(torch.tensor([1.0, -2.0, 0.5, 0.0]))
        encoder.weight.bias.add_(torch.linspace(3.0, 6.0, 24))
    n = 20_000
    x = torch.bernoulli(torch.full((1, 20), 0.4)).expand(n, -1)
    torch.manual_seed(1)
    z, loc, scale = (t.detach() for t in encoder(x))
    torch.testing.assert_close(z.mean(0), loc[0], atol=1e-5, rtol=1e-5)
    assert bool((loc == loc[0]).all()) and bool((scale == scale[0]).all())
    with torch.no_grad():  # the same noise again: the weights a_k and the spreads s_k
        h = encoder.trunk(2 * x[:1] - 1)
        a = (torch.nn.functional.elu(encoder.weight(h) - 5.0) + 1.0).reshape(6, 4)
        torch.manual_seed(1)
        v = encoder.basis(torch.randn(6, n, encoder.eps_dim))
    w = a**2 * v.var(1)  # a_k^2 s_k^2, (K, z_dim)
    se = (2 * (w.sum(0) ** 2 - (w**2).sum(0)) / n).sqrt()
    torch.testing.assert_close(scale[0] ** 2, w.sum(0), rtol=1e-4, atol=0)
    assert bool(((z.var(0) - scale[0] ** 2).abs() < Z * se).all()), (z.var(0), scale[0] ** 2, se)
    assert float(scale.min()) > 0.1  # the noise is used: the test has power


def test_rows_shapes_and_the_implicit_site() -> None:
    x = torch.bernoulli(torch.full((6, 64), 0.5))
    for kind in ("gaussian", "implicit", "implicit-ac"):
        vae = build(kind, z_dim=3, x_dim=64)
        trace = poutine.trace(vae.guide).get_trace(x)
        assert trace.nodes["z"]["value"].shape == (6, 3)
        implicit = bool(trace.nodes["z"]["infer"].get("implicit"))
        assert implicit is (kind != "gaussian")
        assert ("moments" in trace.nodes["z"]["infer"]) is (kind == "implicit-ac")
        if isinstance(vae, ImplicitVAE):
            assert vae.posterior_draws(x, 5).shape == (5, 6, 3)
    assert NoiseEncoder(3, x_dim=64)(x).shape == (6, 3)
    assert InnerProductCritic(3, x_dim=64)(x, torch.randn(6, 3)).shape == (6,)
    # the same seed gives every kind the same decoder
    decoders = []
    for kind in ("gaussian", "implicit-ac"):
        torch.manual_seed(1)
        decoders.append(build(kind, z_dim=3, x_dim=64).decoder.state_dict())
    for key, value in decoders[0].items():
        assert torch.equal(value, decoders[1][key])
