"""GANs that converge: the R1/R2 penalties and the Dirac-GAN of Mescheder, Geiger & Nowozin
(2018, "Which Training Methods for GANs do actually Converge?").

The Dirac-GAN: the data are a point mass at 0, the generator a point mass at theta, the
critic r(x) = psi x. Its only equilibrium is (theta, psi) = (0, 0). The paper shows that
the unregularised game's gradient field circles it (purely imaginary eigenvalues):
simultaneous gradient steps spiral out, alternating ones keep circling, and a gradient
penalty on the critic at the data (R1) makes every eigenvalue's real part negative, so both
converge. Everything here is deterministic (a Delta generator, data all zeros), so the
radius sqrt(theta^2 + psi^2) is measured exactly.
"""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI
from pyro.optim import SGD
from torch import nn

from pyrogen.inference import GAN, KALE, WGANGP, HingeGAN, Trainer
from pyrogen.inference.critic import squared_gradient_norm
from pyrogen.models import Generator

START = 1.0  # theta and psi both start here: radius sqrt(2)
LR = 0.1
N = 4  # rows per batch (all zeros); losses are per row, so the batch size does not matter


def dirac_model(x: torch.Tensor) -> None:
    theta = pyro.param("theta", torch.tensor([START]))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Delta(theta.expand(x.shape[0], 1), event_dim=1), obs=x)


def dirac_critic() -> nn.Linear:
    critic = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        critic.weight.fill_(START)
    return critic


def radius(critic: nn.Linear) -> float:
    return math.hypot(float(pyro.param("theta").detach()), float(critic.weight.detach()))


def alternating(kind: str, r1: float, iterations: int) -> list[float]:
    """The Trainer's alternating gradient steps (critic, then generator), plain SGD."""
    critic = dirac_critic()
    radii: list[float] = []
    sgd = (torch.optim.SGD, {"lr": LR})
    trainer = Trainer(
        GAN(critic, generator_loss=kind, r1=r1),
        dirac_model,
        optimizers={"critic": sgd, "generator": sgd},
        callback=lambda t: radii.append(radius(critic)),
        progress=False,
    )
    trainer.fit(torch.zeros(N, 1), iterations, N)
    return radii


def simultaneous(kind: str, r1: float, iterations: int) -> list[float]:
    """Pyro's SVI on the summed losses: simultaneous gradient steps (the paper's Figure 1)."""
    critic = dirac_critic()
    svi = SVI(dirac_model, lambda x: None, SGD({"lr": LR / N}), GAN(critic, kind, r1=r1))
    radii = []
    for _ in range(iterations):
        svi.step(torch.zeros(N, 1))  # the loss is a sum over the N rows, hence lr / N
        radii.append(radius(critic))
    return radii


def test_squared_gradient_norm_closed_forms() -> None:
    """r(x) = w.x has gradient w everywhere; r(x) = a |x|^2 has 2 a x."""
    linear = nn.Linear(3, 1, bias=False)
    x = torch.randn(7, 3)
    expected = float(linear.weight.detach().pow(2).sum())
    assert float(squared_gradient_norm(linear, x).detach()) == pytest.approx(expected, rel=1e-6)

    a = nn.Parameter(torch.tensor(0.7))
    quad = squared_gradient_norm(lambda t: a * t.pow(2).sum(1), x)
    mean_square = float(x.pow(2).sum(1).mean())
    assert float(quad.detach()) == pytest.approx(4 * 0.49 * mean_square, rel=1e-5)
    (grad,) = torch.autograd.grad(quad, a)  # differentiable in the critic's parameters
    assert float(grad) == pytest.approx(float(8 * 0.7 * x.pow(2).sum(1).mean()), rel=1e-5)
    with torch.no_grad():  # the objectives' no_grad loss still gets the value
        assert float(squared_gradient_norm(linear, x)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("cls", [GAN, HingeGAN, WGANGP, KALE])
def test_r1_and_r2_add_half_gamma_times_the_squared_gradient_norm(cls: type) -> None:
    """On a linear critic psi x the penalties are gamma/2 psi^2, at the data (R1) and at the
    generated points (R2), added to the critic's loss per row; the generator's is unchanged."""
    real, gamma1, gamma2 = torch.randn(N, 1), 0.7, 2.5

    def losses(**penalties: float) -> tuple[float, float]:
        pyro.clear_param_store()
        torch.manual_seed(3)  # the same interpolates for WGAN-GP and KALE
        obj = cls(dirac_critic(), **penalties)
        if isinstance(obj, KALE):
            obj.initialise_log_normaliser(dirac_model, real)
        torch.manual_seed(3)
        out = obj.differentiable_loss(dirac_model, lambda x: None, real)
        return float(out.critic.detach()) / N, float(out.generator.detach()) / N

    plain, r1, r2 = losses(), losses(r1=gamma1), losses(r2=gamma2)
    psi2 = START**2
    assert r1[0] - plain[0] == pytest.approx(gamma1 / 2 * psi2, rel=1e-5)
    assert r2[0] - plain[0] == pytest.approx(gamma2 / 2 * psi2, rel=1e-5)
    assert r1[1] == plain[1] and r2[1] == plain[1]


def test_dirac_gan_without_regularisation_circles_or_diverges() -> None:
    """Minimax game: alternating steps keep the radius (within 3 % of sqrt 2 over 1,000
    iterations: they circle), simultaneous steps spiral out (radius up by more than 80 % in
    1,000 steps). The non-saturating loss shrinks the radius only sublinearly: still above
    0.2 after 1,000 iterations, where R1 is at the equilibrium (next test)."""
    circle = alternating("minimax", 0.0, 1000)
    assert max(abs(r / math.sqrt(2) - 1) for r in circle) < 0.03
    assert min(circle[-100:]) > 0.97 * math.sqrt(2)  # not converging, not leaving

    spiral = simultaneous("minimax", 0.0, 1000)
    assert spiral[-1] > 1.8 * math.sqrt(2)
    assert all(b > a for a, b in itertools.pairwise(spiral[::100]))  # outwards throughout

    assert alternating("nonsaturating", 0.0, 1000)[-1] > 0.2


@pytest.mark.parametrize("kind", ["minimax", "nonsaturating"])
def test_dirac_gan_with_r1_converges(kind: str) -> None:
    """R1 with gamma = 1: both step schemes reach the equilibrium, radius below 1e-4 within
    600 iterations (the linearised map contracts by a constant factor per step)."""
    assert alternating(kind, 1.0, 600)[-1] < 1e-4
    assert simultaneous(kind, 1.0, 600)[-1] < 1e-4


def test_penalty_weights_are_checked() -> None:
    for bad in (-1.0, float("nan"), "1", True):
        with pytest.raises(ValueError, match="r1 must be a number >= 0"):
            GAN(dirac_critic(), r1=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="r2 must be a number >= 0"):
        KALE(dirac_critic(), r2=-0.5)


class Quadratic(nn.Module):
    """r(x) = a x^2 + b x + c: the family of log-ratios of two 1-D Gaussians (the critic is
    well specified, so the equilibrium is exact and what is tested is the dynamics)."""

    def __init__(self) -> None:
        super().__init__()
        self.coef = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.squeeze(-1)
        return torch.stack([x * x, x, torch.ones_like(x)], -1) @ self.coef


MU, SD, BATCH = 3.0, 0.5, 256


def gaussian_gan(seed: int, r1: float, ema: float | None) -> list[tuple[float, float]]:
    """An affine generator a z + b (from nn.Linear's initialisation) against N(3, 0.5^2),
    Adam 1e-2 with betas (0.5, 0.999) for both players, 3,000 iterations; the generated
    mean and sd (50,000 draws) every 250 iterations from 2,000 on (from the average when
    ``ema`` is on: the callback sees it)."""
    pyro.clear_param_store()
    torch.manual_seed(seed)
    data = MU + SD * torch.randn(10_000, 1, generator=torch.Generator().manual_seed(100 + seed))
    generator = Generator(nn.Linear(1, 1), latent_dim=1, event_shape=(1,))
    adam = (torch.optim.Adam, {"lr": 1e-2, "betas": (0.5, 0.999)})
    seen: list[tuple[float, float]] = []

    def evaluate(trainer: Trainer) -> None:
        if trainer.iteration >= 2000 and trainer.iteration % 250 == 0:
            x = generator.sample(50_000)
            seen.append((float(x.mean()), float(x.std())))

    trainer = Trainer(
        GAN(Quadratic(), r1=r1),
        generator,
        optimizers={"critic": adam, "generator": adam},
        callback=evaluate,
        progress=False,
        ema=ema,
    )
    trainer.fit(data, 3000, BATCH, seed=seed)
    return seen


@pytest.mark.slow
def test_recommended_recipe_settles_on_a_gaussian_where_the_plain_gan_oscillates() -> None:
    """The recipe (R1 gamma = 1 and a generator EMA of 0.999) matches the target's mean and
    sd at every evaluation of the last third, in each of 3 seeds; the plain non-saturating
    GAN, same seeds and settings, swings out of the same tolerance.

    Tolerance: the critic judges one batch of B = 256 per step, so no step can tell the
    generated mean and sd from the target's below a batch's standard errors SD/sqrt(B) and
    SD/sqrt(2B); k = 4 of them (0.125 and 0.088); the 50,000 draws of each evaluation add
    SE 0.002."""
    tol_mean, tol_sd = 4 * SD / math.sqrt(BATCH), 4 * SD / math.sqrt(2 * BATCH)
    worst_plain = 0.0
    for seed in range(3):
        recipe = gaussian_gan(seed, r1=1.0, ema=0.999)
        assert len(recipe) == 5
        for mean, sd in recipe:
            assert abs(mean - MU) < tol_mean, (seed, recipe)
            assert abs(sd - SD) < tol_sd, (seed, recipe)
        plain = gaussian_gan(seed, r1=0.0, ema=None)
        worst_plain = max(
            worst_plain, max(max(abs(m - MU) / tol_mean, abs(s - SD) / tol_sd) for m, s in plain)
        )
    assert worst_plain > 1.5  # the plain GAN leaves the tolerance by half of it again
