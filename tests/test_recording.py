"""Recorded training losses: bit for bit the module form's steps, and the fallbacks."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyrogen.inference import RenyiBound
from pyrogen.inference.recording import RecordedLoss, RecordedObjective, Recorder
from pyrogen.optim import FusedOptim
from pyrogen.warnings import PyrogenWarning


class TinyVAE:
    """A Bernoulli VAE (20 -> 4 latents) as a Pyro model/guide pair, networks from a seed."""

    def __init__(self, seed: int, tag: str) -> None:
        torch.manual_seed(seed)
        self.encoder = nn.Sequential(nn.Linear(20, 16), nn.Tanh(), nn.Linear(16, 8))
        self.decoder = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 20))
        self.tag = tag

    def model(self, x):
        pyro.module(f"decoder_{self.tag}", self.decoder)
        with pyro.plate("batch", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(4), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module(f"encoder_{self.tag}", self.encoder)
        with pyro.plate("batch", x.shape[0]):
            h = self.encoder(x)
            pyro.sample("z", dist.Normal(h[..., :4], h[..., 4:].exp()).to_event(1))

    def params(self):
        return list(self.encoder.parameters()) + list(self.decoder.parameters())


def batches():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(32, 20, generator=g) > 0.5).float()
    return [x, x.flip(0), x[:20], x, x[:20], x.roll(3, 0)]  # a partial batch twice


def train(recorded: bool, num_particles: int, alpha: float, tag: str, mode: str = "trace"):
    vae = TinyVAE(0, tag)
    loss_fn = RenyiBound(alpha=alpha, num_particles=num_particles)(vae.model, vae.guide)
    params = vae.params()
    opt = torch.optim.Adam(params, lr=1e-2)
    step = RecordedLoss(loss_fn, params, mode) if recorded else None
    torch.manual_seed(7)
    losses = []
    for x in batches():
        opt.zero_grad()
        if step is not None:
            loss = step.backward(x)
        else:
            loss = loss_fn(x)
            loss.backward()
        opt.step()
        losses.append(loss.detach())
    return torch.stack(losses), [p.detach() for p in params], step


@pytest.mark.parametrize(("num_particles", "alpha"), [(1, 1.0), (5, 0.0)], ids=["elbo", "iwae5"])
def test_recorded_training_equals_the_module_form_bit_for_bit(num_particles, alpha):
    eager_losses, eager_params, _ = train(False, num_particles, alpha, "eager")
    losses, params, step = train(True, num_particles, alpha, "recorded")
    assert torch.equal(losses, eager_losses)
    assert all(torch.equal(a, b) for a, b in zip(params, eager_params, strict=True))
    assert step.fallback is None and len(step._recorder.records) == 2  # two batch shapes


def within_rounding(got, expected):
    """The recorder's own rule for a compiled record: ``|a - b| <= 1000 eps (max |b| + 1)``
    (summation order and fused rounding move float32 results by a few eps of the largest
    term; six Adam steps carry that forward without amplifying it much)."""
    tol = 1000 * torch.finfo(expected.dtype).eps * (float(expected.abs().max()) + 1)
    return float((got - expected).abs().max()) <= tol


@pytest.mark.parametrize(("num_particles", "alpha"), [(1, 1.0), (5, 0.0)], ids=["elbo", "iwae5"])
def test_inductor_training_follows_the_module_form_within_rounding(num_particles, alpha):
    torch.manual_seed(0)
    eager_losses, eager_params, _ = train(False, num_particles, alpha, "eager")
    eager_rng = torch.get_rng_state()
    losses, params, step = train(True, num_particles, alpha, "inductor", mode="inductor")
    assert step.fallback is None and len(step._recorder.records) == 2
    # the draws are the eager run's: the generator ends where the eager run's ended, and the
    # losses and parameters (which an Adam step moves by ~1e-2, far beyond the tolerance,
    # so stale weights in the compiled record would show) agree within rounding
    assert torch.equal(torch.get_rng_state(), eager_rng)
    assert within_rounding(losses, eager_losses)
    assert all(within_rounding(a, b) for a, b in zip(params, eager_params, strict=True))
    start = TinyVAE(0, "start").params()[0].detach()
    assert float((eager_params[0] - start).abs().max()) > 1e-3


def test_inductor_training_without_a_compiler_is_the_module_form_bit_for_bit(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    eager_losses, eager_params, _ = train(False, 5, 0.0, "eager")
    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(PyrogenWarning, match="torch.compile failed .*no C\\+\\+ compiler"):
        losses, params, step = train(True, 5, 0.0, "broken", mode="inductor")
    assert step.fallback is not None and not step._recorder.records
    assert torch.equal(losses, eager_losses)
    assert all(torch.equal(a, b) for a, b in zip(params, eager_params, strict=True))


def train_svi(recorded: bool, fused: bool, tag: str, mode: str = "trace"):
    vae = TinyVAE(0, tag)
    objective = RenyiBound(alpha=0.0, num_particles=3)
    loss = RecordedObjective(objective, mode) if recorded else objective
    optim = FusedOptim(torch.optim.Adam, {"lr": 1e-2}) if fused else pyro.optim.Adam({"lr": 1e-2})
    svi = pyro.infer.SVI(vae.model, vae.guide, optim, loss=loss)
    torch.manual_seed(7)
    losses = torch.tensor([svi.step(x) for x in batches()])
    return losses, [p.detach().clone() for p in vae.params()], loss


@pytest.mark.parametrize("fused", [False, True], ids=["pyro-adam", "fused-adam"])
def test_recorded_svi_equals_svi_with_the_objective_bit_for_bit(fused):
    eager_losses, eager_params, _ = train_svi(False, fused, "eager")
    losses, params, loss = train_svi(True, fused, "recorded")
    assert torch.equal(losses, eager_losses)
    assert all(torch.equal(a, b) for a, b in zip(params, eager_params, strict=True))
    ((names, recorded),) = loss._entries.values()
    assert len(names) == 8 and recorded.fallback is None and len(recorded._recorder.records) == 2


def test_inductor_svi_follows_svi_with_the_objective_within_rounding():
    eager_losses, eager_params, _ = train_svi(False, True, "eager")
    losses, params, loss = train_svi(True, True, "inductor", mode="inductor")
    assert within_rounding(losses, eager_losses)
    assert all(within_rounding(a, b) for a, b in zip(params, eager_params, strict=True))
    ((_, recorded),) = loss._entries.values()
    assert recorded.fallback is None and recorded._recorder.mode == "inductor"


def test_recorded_svi_records_again_after_the_param_store_is_cleared():
    vae = TinyVAE(0, "cleared")
    loss = RecordedObjective(RenyiBound())
    x = batches()[0]
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), loss=loss)
    svi.step(x)
    first = loss._entries[(vae.model, vae.guide)][1]
    pyro.clear_param_store()
    vae.decoder[0].weight.data.zero_()  # pyro.module registers the module's tensors again
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), loss=loss)
    svi.step(x)
    second = loss._entries[(vae.model, vae.guide)][1]
    assert second is not first
    assert all(
        p is q
        for p, q in zip(
            second.params,
            [pyro.param(n).unconstrained() for n in loss._entries[(vae.model, vae.guide)][0]],
            strict=True,
        )
    )


def test_gradients_are_added_to_existing_ones_as_backward_does():
    w = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    unused = torch.zeros(2, requires_grad=True)
    step = RecordedLoss(lambda x: ((x @ w) ** 2).sum(), [w, unused])
    x = torch.arange(12.0).reshape(4, 3)
    for _ in range(3):  # a record, then two replays, all adding up
        loss = step.backward(x)
    expected = 2 * x.T @ (x @ w.detach())
    assert torch.equal(loss, ((x @ w.detach()) ** 2).sum())
    assert torch.allclose(w.grad, 3 * expected) and unused.grad is None


def test_a_replayed_loss_that_is_not_finite_is_explained_by_an_eager_validated_run():
    vae = TinyVAE(0, "nan")
    step = RecordedLoss(RenyiBound(num_particles=2)(vae.model, vae.guide), vae.params())
    x = batches()[0]
    step.backward(x)
    step.backward(x)  # replayed
    bad = x.clone()
    bad[3, 5] = float("nan")
    with pytest.raises(ValueError, match="(?i)nan|support"):
        step.backward(bad)  # the replay's NaN loss runs again eagerly, validated
    with pyro.validation_enabled(False):
        assert torch.isnan(step.backward(bad))


def test_control_flow_on_a_value_falls_back_to_eager_with_a_warning():
    w = torch.ones(3, requires_grad=True)

    def loss_fn(x):
        if float(x.sum()) > 0:  # Python reads a value of the input
            return (x @ w).sum()
        return -(x @ w).sum()

    step = RecordedLoss(loss_fn, [w])
    with pytest.warns(PyrogenWarning, match="recording failed"):
        step.backward(torch.ones(2, 3))
    w.grad = None
    assert torch.equal(step.backward(-torch.ones(2, 3)), torch.tensor(6.0))
    assert torch.equal(w.grad, torch.full((3,), 2.0)) and step.fallback is not None


def test_a_new_value_of_a_non_tensor_argument_gets_its_own_record():
    recorder = Recorder(lambda x, power: (x**power,), "trace", "test")
    x = torch.tensor([2.0, 3.0])
    for power in (2, 3, 2, 3):
        (y,) = recorder(x, power)
        assert torch.equal(y, x**power)
    assert len(recorder.records) == 2


def test_bad_settings_are_refused():
    w = torch.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="'trace' or 'inductor'"):
        RecordedLoss(lambda x: (x * w).sum(), [w], mode="none")
    with pytest.raises(ValueError, match="'trace' or 'inductor'"):
        RecordedObjective(RenyiBound(), mode="jit")
    with pytest.raises(TypeError, match="give params"):
        RecordedLoss(lambda x: (x * w).sum())
    with pytest.raises(ValueError, match="require grad"):
        RecordedLoss(lambda x: (x * w).sum(), [torch.ones(2)])
    with pytest.raises(ValueError, match="must be one of"):
        Recorder(lambda x: (x,), "jit", "test")
    step = RecordedLoss(lambda x: x * w, [w])
    with pytest.raises(ValueError, match="scalar"):
        step.backward(torch.ones(2))
    with pytest.raises(TypeError, match="differentiable_loss"):
        RecordedObjective(pyro.optim.Adam({}))
