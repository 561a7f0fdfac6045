"""The public API under generated bad input (hypothesis): every mistake is a ValueError or a
TypeError (the command line: exit code 2) that names what was wrong, never a deep torch
error, and no partial output file is left behind.

Each test runs ``EXAMPLES`` generated cases; ``pytest -s tests/test_fuzz.py`` prints the
counts (hypothesis's statistics with ``--hypothesis-show-statistics``).
"""

import math
import warnings
from pathlib import Path

import pyro
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pyrogen.cli import main as cli
from pyrogen.data import binarize_dynamic, binarize_static, grid, load_digits, load_mnist, ring
from pyrogen.inference import IWAE, RenyiBound
from pyrogen.inference.mcmc import sample
from pyrogen.metrics import draw_guide, log_likelihood, psis_khat
from pyrogen.models import AmortizedGaussianGuide, ConjugateGaussian, build_vae
from pyrogen.warnings import PyrogenWarning

EXAMPLES = 60
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ERRORS = (ValueError, TypeError)

numbers = st.one_of(
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.just([1, 2]),
)


def _accepts(call) -> bool:  # type: ignore[no-untyped-def]
    """True if ``call()`` ran; False if it refused with ValueError/TypeError; anything else
    (a deep torch error, an AssertionError...) fails the test."""
    try:
        call()
    except ERRORS as exc:
        assert str(exc), "an error without a message"
        return False
    return True


@FUZZ
@given(alpha=numbers, k=numbers)
def test_renyi_bound_arguments(alpha, k) -> None:  # type: ignore[no-untyped-def]
    _accepts(lambda: RenyiBound(alpha, k))


@FUZZ
@given(
    rows=st.integers(0, 4),
    cols=st.integers(0, 3),
    bad=st.sampled_from([None, math.nan, math.inf, -math.inf]),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.int64]),
)
def test_objective_data(rows, cols, bad, dtype) -> None:  # type: ignore[no-untyped-def]
    """Data of every shape and dtype, with NaN or inf or not, through an objective."""
    pyro.clear_param_store()
    model, guide = ConjugateGaussian(dim=2), AmortizedGaussianGuide(dim=2)
    x = torch.zeros(rows, cols)
    if bad is not None and x.numel():
        x[0, 0] = bad
    x = x.to(dtype)
    ok = _accepts(lambda: IWAE(3).loss(model, guide, x))
    if ok:  # what ran was finite floating-point data (one column broadcasts, as in Pyro)
        assert rows > 0 and cols in (1, 2) and bad is None and dtype.is_floating_point


@FUZZ
@given(
    chains=numbers,
    warmup=numbers,
    draws=numbers,
    step_size=numbers,
    kernel=st.sampled_from(["hmc", "mala", "ula", "nope", 3]),
)
@example(chains=1, warmup=0, draws=1, step_size=1, kernel="hmc")  # one chain: ChEES warns
def test_sample_arguments(chains, warmup, draws, step_size, kernel) -> None:  # type: ignore[no-untyped-def]
    def potential(z: torch.Tensor) -> torch.Tensor:
        return 0.5 * (z * z).sum(-1)

    def call() -> None:
        init = torch.zeros(chains if isinstance(chains, int) and chains > 0 else 2, 2)
        # Valid but poor settings (one warm-up iteration, a step of 1, one chain for ChEES)
        # draw a PyrogenWarning (divergent transitions, "ChEES needs two chains or more"):
        # advice about the run, not a refusal of the arguments, which is what this test is
        # about (conftest turns warnings into errors).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=PyrogenWarning)
            sample(
                potential,
                init,
                num_warmup=warmup,
                num_samples=draws,
                step_size=step_size,
                kernel=kernel,
                adapt_step_size=kernel not in ("ula",),
                progress=False,
            )

    _accepts(call)


@FUZZ
@given(num_samples=numbers, chunk=numbers, batch=numbers, bad=st.booleans())
def test_log_likelihood_arguments(num_samples, chunk, batch, bad) -> None:  # type: ignore[no-untyped-def]
    model, guide = ConjugateGaussian(dim=2), AmortizedGaussianGuide(dim=2)
    x = torch.randn(3, 2)
    if bad:
        x[1, 1] = math.nan
    ok = _accepts(
        lambda: log_likelihood(
            model, guide, x, num_samples=num_samples, particle_chunk=chunk, batch_size=batch
        )
    )
    if ok:
        assert not bad


@FUZZ
@given(num_samples=numbers, weights=st.lists(st.floats(allow_nan=True), max_size=5))
def test_guide_draws_and_khat(num_samples, weights) -> None:  # type: ignore[no-untyped-def]
    model, guide = ConjugateGaussian(dim=2), AmortizedGaussianGuide(dim=2)
    _accepts(lambda: draw_guide(model, guide, torch.zeros(2, 2), num_samples=num_samples))
    _accepts(lambda: psis_khat(torch.tensor(weights, dtype=torch.float64)))


@FUZZ
@given(n=numbers, scale=numbers, threshold=numbers)
def test_data_functions(n, scale, threshold) -> None:  # type: ignore[no-untyped-def]
    _accepts(lambda: ring(n, std=scale))
    _accepts(lambda: grid(n, std=scale))
    _accepts(lambda: binarize_static(torch.rand(3, 4), threshold=threshold))
    probs = scale if isinstance(scale, float) else 0.5  # float64 holds any float given
    _accepts(lambda: binarize_dynamic(torch.full((2, 2), probs, dtype=torch.float64)))


@settings(max_examples=EXAMPLES // 2, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    option=st.sampled_from(
        [
            "--epochs",
            "--batch-size",
            "--lr",
            "--z-dim",
            "--eval-samples",
            "--threads",
            "--device",
            "--objectives",
            "--steps",
            "--particles",
            "--families",
        ]
    ),
    value=st.sampled_from(["0", "-1", "nan", "inf", "x", "1e9999", "cuda:9", "renyi:", ""]),
)
def test_command_line_values(tmp_path_factory, option, value) -> None:  # type: ignore[no-untyped-def]
    """A bad value of any option: exit code 2 (argparse's or ours), and nothing written."""
    out = tmp_path_factory.mktemp("cli") / "out"
    if option in ("--steps", "--particles", "--families"):  # a tiny posterior comparison
        base = ["--problem", "correlated-gaussian", "--steps", "30", "--particles", "2"]
        base += ["--families", "mean-field"]
    else:  # a tiny VAE comparison
        base = ["--epochs", "1", "--eval-samples", "10", "--curve-points", "10"]
        base += ["--objectives", "elbo"]
    args = ["compare", *base, option, value, "--out", str(out), "--no-progress"]
    try:
        code = cli(args)
    except SystemExit as exc:  # argparse: a value of the wrong type
        code = exc.code
    if code == 0:  # a value that happens to be valid ran to the end
        return
    assert code == 2, (args, code)
    assert not out.exists() or not any(Path(out).rglob("*.pt")), "a partial checkpoint"


@FUZZ
@given(
    split=st.one_of(st.sampled_from(["train", "test", "all", "valid", ""]), numbers),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.int64, torch.bool, "float"]),
    flatten=numbers,
)
def test_data_loaders(split, dtype, flatten, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    """The loaders: bad splits, dtypes and folders (a missing MNIST is FileNotFoundError)."""
    _accepts(lambda: load_digits(split, flatten=flatten, dtype=dtype))
    empty = tmp_path_factory.mktemp("mnist")
    try:
        load_mnist(empty, split=split, dtype=dtype)
    except (*ERRORS, FileNotFoundError) as exc:
        assert str(exc)


@FUZZ
@given(value=st.floats(allow_nan=False, allow_infinity=False, min_value=-3, max_value=3))
def test_non_binary_data_for_a_bernoulli_likelihood(value) -> None:  # type: ignore[no-untyped-def]
    """Under Pyro's validation (on by default) data off {0, 1} are a ValueError."""
    pyro.clear_param_store()
    vae = build_vae("burda", (4,), z_dim=2)
    x = torch.full((3, 4), value)  # float32: a tiny value may round to 0, which is binary
    ok = _accepts(lambda: IWAE(2).loss(vae.model, vae.guide, x))
    assert ok == bool(((x == 0) | (x == 1)).all())


def test_a_guide_missing_a_site_and_a_model_that_raises() -> None:
    model = ConjugateGaussian(dim=2)

    def empty_guide(x: torch.Tensor) -> None:
        pass

    assert not _accepts(lambda: IWAE(2).loss(model, empty_guide, torch.zeros(3, 2)))

    def raising(x: torch.Tensor) -> None:
        raise KeyError("the user's own bug")

    # a model's own exception reaches the user as it was raised, not rewrapped
    try:
        IWAE(2).loss(raising, AmortizedGaussianGuide(dim=2), torch.zeros(3, 2))
    except KeyError as exc:
        assert "the user's own bug" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("the model's KeyError was swallowed")
