r"""Self-contrastive estimation: NCE whose noise is an earlier copy of the model.

On distinguishability criteria for estimating generative
models (Goodfellow, 2014), https://arxiv.org/abs/1412.6515: with :math:`\nu = 1` and the
noise a frozen copy of the model being trained, the expected NCE gradient is half the
log-likelihood gradient at the moment of the copy; refreshing the copy every few epochs
makes the fixed point the maximum-likelihood estimate (for exact densities).
:class:`SelfContrastive` does this: :meth:`SelfContrastive.refresh` deep-copies the model
(and its guide), freezes the copy, and makes it the noise; its samples come from running
the copy with its data site unobserved, its log-density is the copy's own (exact, or the
same bound as the model's). For a VAE the normalizer is known (:math:`Z = 1`), so no log Z
is learned there unless ``learn_log_normalizer=True`` is asked.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Callable
from typing import Any

from torch import nn

from pyrogen.compat import ParamTables
from pyrogen.inference.densities import has_guide
from pyrogen.inference.nce import NCE, _check_int
from pyrogen.inference.noise import ModelNoise, Noise, Snapshot
from pyrogen.inference.objective import empty_guide

__all__ = ["SelfContrastive"]


def _modules_of(objs: tuple[Any, ...]) -> list[nn.Module]:
    found: list[nn.Module] = []
    for obj in objs:
        owner = obj.__self__ if isinstance(obj, types.MethodType) else obj
        if isinstance(owner, nn.Module) and all(owner is not m for m in found):
            found.append(owner)
    return found


class SelfContrastive(NCE):
    r"""NCE whose noise is a frozen copy of the model being trained, renewed every few epochs.

    On distinguishability criteria for estimating generative models (Goodfellow, 2014),
    https://arxiv.org/abs/1412.6515. At the moment of a copy, model and noise agree, every
    logit is :math:`-\log\nu`, and the gradient of the NCE loss is
    :math:`\frac{\nu}{1+\nu}(\overline{\nabla \log p(y)} - \overline{\nabla \log p(x)})`
    over noise draws :math:`y` and data :math:`x`, whose expectation for a normalized model
    with exact densities is :math:`\frac{\nu}{1+\nu}` times the gradient of the negative
    mean log-likelihood; refreshing the copy makes maximum likelihood the fixed point.

    When the noise changes:

    - :meth:`refresh` ``(model, guide)`` makes the noise a deep copy of them, now. The copy's
      modules are frozen (``requires_grad=False``, eval mode) and it reads a copy of Pyro's
      param store taken at the same moment, so ``pyro.param`` values freeze too.
    - The first :meth:`differentiable_loss` call refreshes if nothing has been copied yet: the
      first noise is the model as training starts (its initial weights).
    - The training loop refreshes when :meth:`refresh_due` ``(epoch)`` says so, after the
      epochs ``refresh_every, 2 refresh_every, ...`` (``epoch`` counts finished epochs);
      :class:`~pyrogen.inference.trainer.Trainer` does it by itself through
      :meth:`end_of_epoch`, and its checkpoints hold the copy (:meth:`state_dict`).

    The noise's samples come from running the copy with its data site unobserved (the model
    must be a sampler there: ``pyro.factor`` sites are ignored when sampling, so they may
    only hold terms constant in ``x``, such as a log Z); its log-density is the copy's own:
    exact without a guide, else the same bound (``bound``, ``num_particles``) as the model's,
    computed with the copy's guide. The model (and guide) must be ``nn.Module`` s or methods
    of one (``vae.model``, ``vae.guide``), so that ``copy.deepcopy`` copies their weights.

    With an unnormalized model the copy carries the same log-normalizer error as the model
    (:math:`G` compares the two), so self-contrastive estimation learns the shape but cannot
    correct log Z: use it with normalized models (a VAE: :math:`Z = 1`).

    Args:
        nu: noise samples per data point.
        refresh_every: epochs between refreshes, :math:`\geq 1`.
        num_particles: as for :class:`NCE`, and so are ``bound``,
            ``learn_log_normalizer``, ``log_normalizer_init``, ``data_site``,
            ``max_plate_nesting``, ``vectorize_particles`` and ``name``; the copy of a
            learned log Z is frozen with the model.

    Example:
        >>> import pyro, torch
        >>> from pyrogen.models import build_vae
        >>> vae = build_vae("burda", data_shape=(64,), z_dim=8)
        >>> sc = SelfContrastive(nu=1, refresh_every=5, num_particles=5, max_plate_nesting=1)
        >>> x = torch.bernoulli(torch.full((10, 64), 0.3))
        >>> loss = sc.differentiable_loss(vae.model, vae.guide, x)  # first noise: this VAE
        >>> sc.refresh_due(5), sc.refresh_due(6)
        (True, False)
    """

    def __init__(self, nu: float = 1.0, refresh_every: int = 5, **options: Any) -> None:
        super().__init__(None, nu, **options)  # no noise until the first refresh
        self.refresh_every = _check_int("refresh_every", refresh_every)
        self.num_refreshes = 0
        """How many copies have been taken."""
        self.noise_model: Callable[..., Any] | None = None
        """The frozen copy of the model (None before the first refresh)."""
        self.noise_guide: Callable[..., Any] | None = None
        """The frozen copy of the guide (None without one)."""
        self._source: tuple[Callable[..., Any], Callable[..., Any] | None] | None = None
        self._refreshed_after: int | None = None  # the epoch of the last scheduled refresh

    def _as_noise(self, noise: Any) -> Noise | None:
        return None if noise is None else super()._as_noise(noise)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", refresh_every={self.refresh_every})"

    def refresh(self, model: Callable[..., Any], guide: Callable[..., Any] | None = None) -> None:
        """Make the noise a frozen deep copy of ``model`` (and ``guide``) as they are now."""
        if not callable(model) or (guide is not None and not callable(guide)):
            raise TypeError("refresh needs the model (and guide) as callables")
        log_z = 0.0 if self.normalizer is None else float(self.normalizer.log_Z.detach())
        self._copy(model, guide, ParamTables.copy_of_global(), log_z)
        self.num_refreshes += 1

    def _copy(
        self,
        model: Callable[..., Any],
        guide: Callable[..., Any] | None,
        tables: ParamTables,
        log_z: float,
    ) -> Snapshot:
        self._source = (model, guide)
        model_copy, guide_copy = copy.deepcopy((model, guide))
        modules = _modules_of((model_copy, guide_copy))
        for module in modules:
            module.eval()
        frozen = Snapshot(tables, tuple(modules))
        frozen.freeze()
        self.noise_model = model_copy
        self.noise_guide = guide_copy if has_guide(guide_copy) else None
        self._noise = ModelNoise(
            model_copy, self.noise_guide, self.data_site, self._noise_bound, frozen, log_z
        )
        return frozen

    # State: the snapshot is what a resumed run must find again.
    def state_dict(self) -> dict[str, Any]:
        """The learned log Z (if any), the number of copies, and the frozen copy: its
        modules' weights, its copy of the param store and its log Z."""
        state = super().state_dict()
        state["num_refreshes"] = self.num_refreshes
        state["refreshed_after"] = self._refreshed_after
        noise = self._noise
        state["snapshot"] = None
        if isinstance(noise, ModelNoise) and noise.snapshot is not None:
            state["snapshot"] = {
                "modules": [m.state_dict() for m in noise.snapshot.modules],
                "params": dict(noise.snapshot.store.params),
                "log_z": noise.log_normalizer,
            }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a saved copy is rebuilt from the programs given to
        :meth:`bind` (or to :meth:`refresh`), then given the saved weights."""
        super().load_state_dict(state)
        self.num_refreshes = int(state["num_refreshes"])
        self._refreshed_after = state["refreshed_after"]
        saved = state["snapshot"]
        if saved is None:
            self._noise = None
            return
        if self._source is None:
            raise ValueError(
                "the state holds a frozen copy of the model: call bind(model, guide) first, "
                "so that it can be rebuilt"
            )
        frozen = self._copy(*self._source, ParamTables.of(dict(saved["params"])), saved["log_z"])
        if len(frozen.modules) != len(saved["modules"]):
            raise ValueError(
                f"the state's copy has {len(saved['modules'])} modules, the model and guide "
                f"{len(frozen.modules)}"
            )
        for module, weights in zip(frozen.modules, saved["modules"], strict=True):
            module.load_state_dict(weights)

    def bind(self, model: Callable[..., Any], guide: Callable[..., Any]) -> None:
        self._source = (model, guide)

    def end_of_epoch(
        self, epoch: int, model: Callable[..., Any], guide: Callable[..., Any]
    ) -> None:
        """Refresh the copy when :meth:`refresh_due` says so (once per epoch)."""
        if self.refresh_due(epoch) and epoch != self._refreshed_after:
            self.refresh(model, guide)
            self._refreshed_after = epoch

    def refresh_due(self, epoch: int) -> bool:
        """Whether the loop should :meth:`refresh` after ``epoch`` finished epochs: every
        ``refresh_every`` epochs (``epoch = refresh_every, 2 refresh_every, ...``)."""
        _check_int("epoch", epoch, minimum=0)
        return epoch > 0 and epoch % self.refresh_every == 0

    def trainer_callback(
        self,
        model: Callable[..., Any],
        guide: Callable[..., Any] | None = None,
        iterations_per_epoch: int = 1,
    ) -> Callable[[Any], None]:
        """A ``callback(trainer)`` for loops that count iterations only: it refreshes after
        every ``refresh_every * iterations_per_epoch`` iterations. The
        :class:`~pyrogen.inference.trainer.Trainer` needs none (it calls :meth:`end_of_epoch`,
        and a refresh is never taken twice for one epoch)."""
        per_epoch = _check_int("iterations_per_epoch", iterations_per_epoch)

        def callback(trainer: Any) -> None:
            if trainer.iteration % per_epoch == 0:
                self.end_of_epoch(trainer.iteration // per_epoch, model, guide or empty_guide)

        return callback

    def _noise_source(self, model: Callable[..., Any], guide: Callable[..., Any]) -> Noise:
        if self._noise is None:
            self.refresh(model, guide)
        assert self._noise is not None
        return self._noise
