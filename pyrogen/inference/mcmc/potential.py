r"""Potential energies for the batched kernels from a Pyro model.

:class:`ModelPotential` turns a Pyro model with continuous latent sites into
:math:`U(u) = -\log p(x, T(u)) - \log |\det J_T(u)|` over a flat unconstrained vector per chain,
``(num_chains, dim)``. The bijections :math:`T` are Pyro's own (``biject_to(site.support)``,
as in ``pyro.infer.mcmc.util.initialize_model``), so a HalfCauchy scale or a Dirichlet weight
works unchanged. Many chains are evaluated on one of three paths
(:mod:`~pyrogen.inference.batching`), chosen once per potential by a probe of two chains:
a ``pyro.plate`` of chains left of the model's plates (the way Pyro vectorizes particles:
one run for all chains) when the model broadcasts over that dimension, as
``(x * beta).sum(-1)`` does; otherwise ``torch.func.vmap`` over one chain's potential, which
runs a model written with ``x @ beta`` unchanged, with the same values and gradients as a
loop over chains, at about the plate's cost (``benchmarks/results/nonbroadcasting.md``);
a loop over chains, with a warning, when vmap cannot run the model either (Python control
flow on a latent value). With one chain no plate is added and the model runs exactly as
Pyro's HMC runs it.
``pyro.deterministic`` sites are not part of the potential; :meth:`ModelPotential.draws`
computes them beside the latent values.

Example:
    >>> import pyro, pyro.distributions as dist, torch
    >>> def model(y):
    ...     scale = pyro.sample("scale", dist.HalfCauchy(1.0))
    ...     with pyro.plate("data", len(y)):
    ...         pyro.sample("y", dist.Normal(0.0, scale), obs=y)
    >>> potential = ModelPotential(model, (torch.randn(20),))
    >>> potential(torch.zeros(4, potential.dim)).shape
    torch.Size([4])
"""

import contextlib
from collections.abc import Callable
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample
from torch import Tensor
from torch.distributions import Transform, biject_to

from pyrogen.inference.batching import (
    BatchingError,
    check_batching,
    explain,
    same_values,
    warn_loop,
)

__all__ = ["ModelPotential"]


class ModelPotential:
    """Potential energy of a Pyro model's posterior in unconstrained coordinates.

    Args:
        model: a Pyro program with continuous latent sites and observed data.
        model_args: positional arguments of the model.
        model_kwargs: keyword arguments of the model.
        max_plate_nesting: plates the model nests (guessed from one prior run when omitted).
        batching: how many chains are evaluated: ``"auto"`` (probe two chains once: the
            plate if it agrees with one-by-one evaluation, else vmap, else the loop, which
            warns), or ``"plate"``, ``"vmap"``, ``"loop"`` (a model that fails on the path
            asked for raises :class:`~pyrogen.inference.batching.BatchingError` naming the
            site and what to write).

    Attributes:
        names: latent site names, in the order of the flat vector.
        dim: length of the flat unconstrained vector.
        transforms: ``name -> T`` mapping unconstrained to constrained values.
        deterministic_shapes: ``name -> shape`` of the ``pyro.deterministic`` sites.
        batching: the path many chains take, ``"plate"``, ``"vmap"`` or ``"loop"`` (reading
            it runs the probe when ``batching="auto"`` and no batch has run yet).
    """

    def __init__(
        self,
        model: Callable[..., Any],
        model_args: tuple = (),
        model_kwargs: dict[str, Any] | None = None,
        max_plate_nesting: int | None = None,
        batching: str = "auto",
    ) -> None:
        self._requested = check_batching(batching)
        self._batching: str | None = None if batching == "auto" else batching
        self.model = model
        self.model_args = tuple(model_args)
        self.model_kwargs = dict(model_kwargs or {})
        with torch.no_grad():
            trace = poutine.trace(model).get_trace(*self.model_args, **self.model_kwargs)
        trace.compute_log_prob()
        nesting = 0
        self.names: list[str] = []
        self.shapes: dict[str, torch.Size] = {}
        self.unconstrained_shapes: dict[str, torch.Size] = {}
        self.transforms: dict[str, Transform] = {}
        self.deterministic_shapes: dict[str, torch.Size] = {}
        batch_dims: dict[str, int] = {}
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            for frame in site["cond_indep_stack"]:
                if frame.vectorized and frame.dim is not None:
                    nesting = max(nesting, -frame.dim)
            infer = site["infer"] or {}
            if infer.get("_deterministic"):
                deterministic: Any = site["value"]
                self.deterministic_shapes[name] = deterministic.shape
                continue
            if site["is_observed"] or infer.get("_do_not_trace"):
                continue
            fn: Any = site["fn"]
            if fn.support.is_discrete:
                raise ValueError(
                    f"latent site {name!r} is discrete; the gradient kernels need continuous "
                    "latent sites (marginalise it out, or use a Gibbs kernel)"
                )
            transform = biject_to(fn.support)
            value: Any = site["value"]
            self.names.append(name)
            self.shapes[name] = value.shape
            self.unconstrained_shapes[name] = transform.inv.forward_shape(value.shape)
            self.transforms[name] = transform
            batch_dims[name] = len(fn.batch_shape)
        if not self.names:
            raise ValueError("the model has no latent sample site to sample")
        self.max_plate_nesting = nesting if max_plate_nesting is None else max_plate_nesting
        self._pad = {n: self.max_plate_nesting - batch_dims[n] for n in self.names}
        bad = [n for n in self.names if self._pad[n] < 0]
        if bad:
            raise ValueError(f"sites {bad} have more batch dimensions than max_plate_nesting")
        self.sizes = {n: int(torch.Size(self.unconstrained_shapes[n]).numel()) for n in self.names}
        self.dim = sum(self.sizes.values())
        first: Any = trace.nodes[self.names[0]]["value"]
        self.dtype, self.device = first.dtype, first.device

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """Unconstrained site values ``(num_chains, *unconstrained_shape)``."""
        if flat.dim() != 2 or flat.shape[1] != self.dim:
            raise ValueError(f"expected (num_chains, {self.dim}), got {tuple(flat.shape)}")
        out, start = {}, 0
        for name in self.names:
            size = self.sizes[name]
            out[name] = flat[:, start : start + size].reshape(
                (flat.shape[0],) + self.unconstrained_shapes[name]
            )
            start += size
        return out

    def constrain(self, flat: Tensor) -> dict[str, Tensor]:
        """Constrained site values ``(num_chains, *site_shape)`` from flat positions."""
        return {n: self.transforms[n](u) for n, u in self.unflatten(flat).items()}

    def unconstrain(self, values: dict[str, Tensor]) -> Tensor:
        """Flat positions from constrained values ``(num_chains, *site_shape)`` per site."""
        missing = [n for n in self.names if n not in values]
        if missing:
            raise ValueError(f"no value for latent sites {missing}")
        parts = [self.transforms[n].inv(values[n]) for n in self.names]
        return torch.cat([p.reshape(p.shape[0], -1) for p in parts], 1)

    def draws(self, positions: Tensor) -> dict[str, Tensor]:
        """Constrained latent and deterministic site values ``(num_chains, num_draws, *shape)``
        from flat positions ``(num_chains, num_draws, dim)``.

        Deterministic sites need the model run at each draw; it runs on one draw of every
        chain at a time, the batch the sampler itself ran, so memory stays as in sampling.
        """
        num_chains, num_draws = positions.shape[:2]
        flat = positions.reshape(num_chains * num_draws, self.dim)
        out = {
            k: v.reshape((num_chains, num_draws) + v.shape[1:])
            for k, v in self.constrain(flat).items()
        }
        if self.deterministic_shapes:
            per_draw = [self.deterministic(positions[:, i]) for i in range(num_draws)]
            for name in self.deterministic_shapes:
                out[name] = torch.stack([d[name] for d in per_draw], 1)
        return out

    def trace_at(self, flat: Tensor, model: Callable[..., Any] | None = None) -> Any:
        """A trace of ``model`` (default: this potential's model; any program with the same
        latent sites, such as the model with its data site unobserved) conditioned on the
        latent values at flat positions, the chains as a plate left of the model's (so
        several chains need a model that broadcasts: ``batching == "plate"``)."""
        if flat.shape[0] > 1 and self.batching != "plate":
            raise BatchingError(
                f"trace_at needs a model that broadcasts over chains, and this one runs on "
                f"the {self.batching!r} path; " + explain("one trace for several chains", "chains")
            )
        return self._plate_trace(flat, model)

    def _plate_trace(self, flat: Tensor, model: Callable[..., Any] | None = None) -> Any:
        num_chains = flat.shape[0]
        values, _ = self._values(flat)
        conditioned = poutine.condition(self.model if model is None else model, data=values)
        with pyro.validation_enabled(False), self._chain_plate(num_chains):
            return poutine.trace(conditioned).get_trace(*self.model_args, **self.model_kwargs)

    @torch.no_grad()
    def deterministic(self, flat: Tensor) -> dict[str, Tensor]:
        """The ``pyro.deterministic`` sites at flat positions, ``(num_chains, *shape)`` each."""
        num_chains = flat.shape[0]
        if num_chains > 1 and self.batching != "plate":
            return self._per_chain(self._one_deterministic, flat)
        trace = self._plate_trace(flat)
        out = {}
        for name, shape in self.deterministic_shapes.items():
            value: Any = trace.nodes[name]["value"]
            size = shape.numel()
            if value.numel() == num_chains * size:
                out[name] = value.reshape((num_chains,) + shape)
            elif value.numel() == size:  # does not depend on the latent values
                out[name] = value.reshape(shape).expand((num_chains,) + shape)
            else:
                raise ValueError(
                    f"deterministic site {name!r} has shape {tuple(value.shape)} under "
                    f"{num_chains} chains; expected {(num_chains,) + tuple(shape)}"
                )
        return out

    def _one_deterministic(self, row: Tensor) -> dict[str, Tensor]:
        trace = self._plate_trace(row.unsqueeze(0))
        return {
            name: trace.nodes[name]["value"].reshape(shape)
            for name, shape in self.deterministic_shapes.items()
        }

    def initial_position(
        self, num_chains: int, radius: float = 2.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """Uniform in ``(-radius, radius)`` in unconstrained space, as Stan initialises."""
        u = torch.rand(
            num_chains, self.dim, dtype=self.dtype, device=self.device, generator=generator
        )
        return (2 * u - 1) * radius

    def __call__(self, flat: Tensor) -> Tensor:
        """:math:`U` per chain, ``(num_chains,)``."""
        # The prior run in __init__ validated the data; values here are inside the supports
        # by construction, so per-evaluation checks would only cost time.
        with pyro.validation_enabled(False):
            if flat.shape[0] == 1:
                return self._one(flat[0]).unsqueeze(0)
            path = self.batching
            if path != "plate":
                return self._per_chain(self._one, flat)
            try:
                return self._plate_potential(flat)
            except BatchingError:
                raise
            except (RuntimeError, ValueError, IndexError, TypeError) as exc:
                raise BatchingError(explain(exc, "chains")) from exc

    @property
    def batching(self) -> str:
        if self._batching is None:
            self._batching = self._choose_batching()
        return self._batching

    def _per_chain(self, fn: Callable[[Tensor], Any], flat: Tensor) -> Any:
        """``fn`` of one chain's position ``(dim,)``, for every chain: vmap or a loop."""
        if self.batching == "vmap":
            try:
                return torch.func.vmap(fn)(flat)
            except (RuntimeError, ValueError, IndexError, TypeError) as exc:
                raise BatchingError(explain(exc, "chains")) from exc
        per_chain = [fn(row) for row in flat]
        if isinstance(per_chain[0], dict):
            return {k: torch.stack([d[k] for d in per_chain]) for k in per_chain[0]}
        return torch.stack(per_chain)

    def _choose_batching(self) -> str:
        """Two chains evaluated together against the two one by one: the plate if they
        agree, else vmap if it agrees, else the loop (with a warning). A model that fails
        for a single chain raises its own error."""
        generator = torch.Generator(device=self.device).manual_seed(0)
        position = self.initial_position(2, generator=generator)
        with pyro.validation_enabled(False), torch.no_grad():
            reference = torch.stack([self._one(row) for row in position])
            try:
                if same_values(self._plate_potential(position), reference):
                    return "plate"
                failure = explain(self._differing_site(position), "chains")
            except Exception as exc:  # noqa: BLE001 - any failure of the plate path
                failure = explain(exc, "chains")
            try:
                if same_values(torch.func.vmap(self._one)(position), reference):
                    return "vmap"
                failure = explain("vmap over chains gives values that differ from a loop", "chains")
            except Exception as exc:  # noqa: BLE001 - any failure of vmap
                failure = explain(exc, "chains")
        warn_loop(failure, "chains")
        return "loop"

    def _differing_site(self, position: Tensor) -> str:
        """The first site whose log-density under the chain plate differs from the chains'
        own, for the probe's message."""
        batched = self._plate_trace(position)
        batched.compute_log_prob()
        singles = [self._plate_trace(position[i : i + 1]) for i in range(position.shape[0])]
        for name, site in batched.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            lp = site["log_prob"]
            ref = torch.stack(
                [torch.as_tensor(s.log_prob_sum(lambda n, _, m=name: n == m)) for s in singles]
            )
            if lp.dim() == 0 or lp.shape[0] != ref.shape[0]:
                return f"site {name!r} has log-density shape {tuple(lp.shape)} under 2 chains"
            if not same_values(lp.reshape(ref.shape[0], -1).sum(1), ref):
                return f"site {name!r} has a different log-density under 2 chains than per chain"
        return "the potential under 2 chains differs from the chains' own"

    def _chain_plate(self, num_chains: int) -> contextlib.AbstractContextManager[Any]:
        if num_chains == 1:
            return contextlib.nullcontext()
        return pyro.plate("_pyrogen_chains", num_chains, dim=-(self.max_plate_nesting + 1))

    def _values(self, flat: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """Constrained values shaped for the model under the chain plate, and log |det J|."""
        num_chains = flat.shape[0]
        values, log_det = {}, flat.new_zeros(num_chains)
        for name, u in self.unflatten(flat).items():
            transform = self.transforms[name]
            x = transform(u)
            log_det = log_det + transform.log_abs_det_jacobian(u, x).reshape(num_chains, -1).sum(1)
            if num_chains == 1:
                values[name] = x.reshape(self.shapes[name])
            else:
                values[name] = x.reshape((num_chains,) + (1,) * self._pad[name] + self.shapes[name])
        return values, log_det

    def _one(self, row: Tensor) -> Tensor:
        """:math:`U` of one chain at ``(dim,)``, a scalar: the model as Pyro's HMC runs it."""
        values, log_det = self._values(row.unsqueeze(0))
        conditioned = poutine.condition(self.model, data=values)
        trace = poutine.trace(conditioned).get_trace(*self.model_args, **self.model_kwargs)
        return -(trace.log_prob_sum() + log_det[0])

    def _plate_potential(self, flat: Tensor) -> Tensor:
        num_chains = flat.shape[0]
        values, log_det = self._values(flat)
        conditioned = poutine.condition(self.model, data=values)
        with self._chain_plate(num_chains):
            trace = poutine.trace(conditioned).get_trace(*self.model_args, **self.model_kwargs)
        trace.compute_log_prob()
        log_joint = log_det
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            lp = site["log_prob"]
            if lp.dim() != self.max_plate_nesting + 1 or lp.shape[0] != num_chains:
                raise ValueError(
                    f"site {name!r} has log-density shape {tuple(lp.shape)} under "
                    f"{num_chains} chains; the model must broadcast over a leading chain "
                    f"dimension left of its {self.max_plate_nesting} plate(s)"
                )
            log_joint = log_joint + lp.reshape(num_chains, -1).sum(1)
        return -log_joint
