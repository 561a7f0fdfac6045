"""An optimiser for ``pyro.infer.SVI`` that steps every parameter with one torch optimiser.

Pyro's ``PyroOptim`` keeps one torch optimiser per parameter and calls each one's ``step`` at
every SVI step: for a VAE's ten weight and bias tensors that is ten optimiser calls, each
with its own Python overhead (hooks, profiling records, the per-call setup of ``Adam``).
:class:`FusedOptim` keeps a single optimiser over the parameters of the step and calls it
once. The result is the same: each parameter keeps its own state (Adam's step count and
moments are per parameter in torch), is stepped exactly at the steps whose trace holds it,
and torch's single-tensor implementation (the CPU default) does the same arithmetic for a
parameter whether it is alone in its optimiser or not, so the parameters equal Pyro's bit
for bit (``tests/test_optim.py``). When the set of parameters changes between steps (a site
that appears later), the optimiser is rebuilt over the new set and every parameter's state
carried over. Its ``get_state``/``set_state`` use ``PyroOptim``'s format (parameter name to a
one-parameter optimiser's ``state_dict``), so checkpoints move between the two.

Example:
    >>> import torch
    >>> from pyrogen.optim import FusedOptim
    >>> optim = FusedOptim(torch.optim.Adam, {"lr": 1e-3})  # in place of pyro.optim.Adam
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyro
import torch
from pyro.optim import PyroOptim

__all__ = ["FusedOptim"]


class FusedOptim(PyroOptim):
    """``PyroOptim``'s interface, one ``optim_constructor(params, **optim_args)`` for all
    parameters (see the module's description).

    Args:
        optim_constructor: a ``torch.optim.Optimizer`` class (not a learning-rate scheduler).
        optim_args: its keyword arguments, the same for every parameter (per-parameter
            arguments, given as a callable, need Pyro's own ``PyroOptim``).
    """

    def __init__(
        self, optim_constructor: type[torch.optim.Optimizer], optim_args: dict[str, Any]
    ) -> None:
        if not (
            isinstance(optim_constructor, type)
            and issubclass(optim_constructor, torch.optim.Optimizer)
        ):
            raise TypeError(
                "FusedOptim needs a torch.optim.Optimizer class, got "
                f"{optim_constructor!r}; for learning-rate schedulers use pyro.optim's"
            )
        if not isinstance(optim_args, dict):
            raise TypeError(
                "FusedOptim takes one dict of optimiser arguments for every parameter; "
                "per-parameter arguments (a callable) need pyro.optim.PyroOptim"
            )
        super().__init__(optim_constructor, optim_args)
        self._cls: type[torch.optim.Optimizer] = optim_constructor
        self._args: dict[str, Any] = optim_args
        self._optimizer: torch.optim.Optimizer | None = None
        self._members: tuple[int, ...] = ()
        self._states: dict[torch.Tensor, dict[str, Any]] = {}  # of parameters not in this step
        self._waiting: dict[str, Any] = {}  # set_state's, by name, until the parameter steps

    def __call__(self, params: Iterable[torch.Tensor], *args: Any, **kwargs: Any) -> None:
        """One optimiser step of every parameter in ``params``."""
        params = list(params)
        members = tuple(sorted(map(id, params)))
        if self._optimizer is None or members != self._members:
            self._rebuild(params, members)
        assert self._optimizer is not None
        self._optimizer.step(*args, **kwargs)

    def _single(self, param: torch.Tensor) -> torch.optim.Optimizer:
        return self._cls([param], **self._args)

    def _rebuild(self, params: list[torch.Tensor], members: tuple[int, ...]) -> None:
        if self._optimizer is not None:
            self._states.update(self._optimizer.state)
        optimizer = self._cls(params, **self._args)
        store = pyro.get_param_store()
        for p in params:
            state = self._states.pop(p, None)
            if state is None:
                waiting = self._waiting.pop(str(store.param_name(p)), None)
                if waiting is not None:  # torch's own loading casts it to the parameter
                    single = self._single(p)
                    single.load_state_dict(waiting)
                    state = single.state.get(p)
            if state:
                optimizer.state[p] = state
        self._optimizer, self._members = optimizer, members

    def _all_states(self) -> dict[torch.Tensor, dict[str, Any]]:
        states = dict(self._states)
        if self._optimizer is not None:
            states.update({p: s for p, s in self._optimizer.state.items() if s})
        return states

    def get_state(self) -> dict[str, Any]:
        """Parameter name to the ``state_dict`` a one-parameter optimiser of it would have
        (``PyroOptim``'s format)."""
        store = pyro.get_param_store()
        out: dict[str, Any] = {}
        for p, state in self._all_states().items():
            single = self._single(p)
            single.state[p] = state
            out[str(store.param_name(p))] = single.state_dict()
        return out

    def set_state(self, state_dict: dict[str, Any]) -> None:
        """Take states from :meth:`get_state` (or ``PyroOptim.get_state``); each is loaded
        when its parameter is next stepped, as ``PyroOptim`` does."""
        self._waiting.update(state_dict)
        if self._optimizer is not None:  # parameters already held: loaded at the next step
            self._states.update(self._optimizer.state)
            store = pyro.get_param_store()
            for p in list(self._states):
                if store.param_name(p) in state_dict:
                    del self._states[p]
            self._optimizer, self._members = None, ()
