import itertools

import pyro.poutine as poutine
import pytest
import torch

from pyrogen.models.rbm import BernoulliRBM


def all_states(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


def tiny_rbm(v: int = 4, h: int = 3) -> BernoulliRBM:
    rbm = BernoulliRBM(v, h).double()
    with torch.no_grad():
        rbm.weight.normal_(0, 1.0)
        rbm.visible_bias.normal_(0, 0.5)
        rbm.hidden_bias.normal_(0, 0.5)
    return rbm


def test_free_energy_sums_out_the_hidden_layer():
    rbm = tiny_rbm()
    vs, hs = all_states(4), all_states(3)
    energies = rbm.energy(vs[:, None, :], hs[None, :, :])  # (16, 8)
    assert torch.allclose(rbm.free_energy(vs), -torch.logsumexp(-energies, 1))


@pytest.mark.parametrize("shape", [(4, 3), (3, 5)])
def test_log_partition_equals_brute_force(shape):
    rbm = tiny_rbm(*shape)
    vs, hs = all_states(shape[0]), all_states(shape[1])
    brute = torch.logsumexp(-rbm.energy(vs[:, None, :], hs[None, :, :]).flatten(), 0)
    assert torch.allclose(rbm.log_partition(chunk_size=3), brute)


def test_pyro_model_scores_rows_by_the_free_energy():
    rbm = tiny_rbm()
    data = all_states(4)[:5]
    trace = poutine.trace(rbm.model).get_trace(data)
    assert torch.allclose(trace.log_prob_sum(), -rbm.free_energy(data).sum())


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="at least one"):
        BernoulliRBM(0, 3)
    with pytest.raises(ValueError, match="visible must end in 4"):
        tiny_rbm().free_energy(torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="at most 24"):
        BernoulliRBM(30, 30).log_partition()
