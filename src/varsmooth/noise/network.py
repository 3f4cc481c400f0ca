"""Per-example label noise of any network under a diagonal Gaussian posterior (e.g. IVON's).

Paper: "Variational Learning Induces Adaptive Label Smoothing" (2025), Sec. 3.4. For a network ``f_i(theta)`` and a
posterior ``q = N(m, diag(sigma^2))`` (IVON: ``sigma^2 = 1 / (ess (h + delta))``, the mean ``m`` is the model's
parameters), with ``A'`` the softmax (or sigmoid / exp):

* expected noise (Eq. 15 with a Monte-Carlo expectation): ``eps_i = A'(f_i(m)) - (1/S) sum_s A'(f_i(theta_s))``,
  ``theta_s = m + sigma * e_s``, ``e_s ~ N(0, I)``, with its Monte-Carlo standard error;
* per-step noise (what one training step with one posterior sample sees):
  ``eps_i|s = A'(f_i(m)) - A'(f_i(theta_s))``, and its RMS magnitude ``sqrt(mean_s ||eps_i|s||^2)``;
* linearized noise (Eq. 19): ``eps_i|s ~ -J_{A'}(f_i(m)) J_f(m) (sigma * e_s)``: a first-order Taylor expansion of
  the per-step noise, computed with forward-mode AD (``torch.func.jvp`` through ``functional_call``), one
  Jacobian-vector product per sample (vmapped over chunks of samples so the primal pass is shared); no per-example
  Jacobian is ever formed. The sign (the paper writes ``+``; ``e`` and ``-e`` have the same law) is chosen so the
  linearized draw ``s`` approximates the per-step draw ``s`` made with the same ``e_s``.

Both estimators draw ``e_s`` in the same order (sample by sample; parameters with sigma > 0 in
``named_parameters()`` order) from one seeded generator, so with the same seed they use the same draws. The model
runs in eval mode, without gradients; its parameters are never modified (``functional_call``), so they are exactly
as before, and its train/eval mode is restored. Results are accumulated in float64 (a float32 model limits them
to ~1e-7). Shapes: N examples, K outputs, S samples. Smoothed labels ``y_i + eps_i`` sum to 1 over classes (softmax).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vmap
from tqdm.auto import tqdm

from ..errors import InputError
from .glm import Likelihood

__all__ = [
    "NoiseMethod",
    "NetworkNoise",
    "resolve_std",
    "expected_label_noise",
    "linearized_label_noise",
    "label_noise",
]


class NoiseMethod(str, Enum):
    MC = "mc"
    LINEARIZED = "linearized"


@dataclass
class NetworkNoise:
    """Label noise of N examples with K outputs (numpy float64).

    ``noise`` (N, K): the expected noise (MC) or the linearized per-step noise of draw 0 (Eq. 19);
    ``magnitude`` (N,): ``||noise||_2``; ``step_noise`` (N, K): per-step noise of draw 0 (MC: exact, linearized:
    Eq. 19); ``step_rms`` (N,): ``sqrt(mean_s ||per-step noise_s||^2)``; ``probs`` (N, K): ``A'(f(m))``;
    ``stderr`` (N, K): MC standard error of ``noise`` (None for linearized); ``smoothed_labels`` (N, K):
    ``y + noise`` when labels were given; ``draws`` (S, N, K): every per-step noise when ``keep_draws``.
    """

    noise: np.ndarray
    magnitude: np.ndarray
    step_noise: np.ndarray
    step_rms: np.ndarray
    probs: np.ndarray
    stderr: np.ndarray | None
    smoothed_labels: np.ndarray | None
    draws: np.ndarray | None
    method: str
    samples: int


def resolve_std(model: nn.Module, std) -> dict[str, Tensor]:
    """``{parameter name: sigma}`` from an IVON-like object (``posterior_std()``), a mapping keyed by parameter or
    name, or a float (the same sigma everywhere). Parameters without an entry are deterministic (sigma = 0)."""
    named = dict(model.named_parameters())
    if hasattr(std, "posterior_std"):
        std = std.posterior_std()
    if isinstance(std, (int, float)):
        if not (std >= 0 and np.isfinite(std)):
            raise InputError(f"std must be a finite number >= 0, got {std}")
        return {n: torch.full_like(p, float(std)).detach() for n, p in named.items()}
    if not isinstance(std, Mapping):
        raise InputError(f"std must be a mapping, a float or have posterior_std(); got {type(std).__name__}")
    by_id = {id(p): n for n, p in named.items()}
    out = {}
    for key, sigma in std.items():
        name = key if isinstance(key, str) else by_id.get(id(key))
        if name not in named:
            what = key if isinstance(key, str) else f"a tensor of shape {tuple(key.shape)}"
            raise InputError(f"std has an entry for a parameter that is not in the model: {what}")
        p = named[name]
        sigma = torch.as_tensor(sigma).detach().to(device=p.device, dtype=p.dtype)
        if sigma.shape != p.shape and sigma.numel() != 1:
            raise InputError(f"std for {name!r} has shape {tuple(sigma.shape)}, expected {tuple(p.shape)}")
        if not torch.all(torch.isfinite(sigma)) or torch.any(sigma < 0):
            raise InputError(f"std for {name!r} must be finite and >= 0")
        out[name] = sigma.expand_as(p)
    return out


def _batches(inputs, batch_size: int, device) -> Iterator[Tensor]:
    if isinstance(inputs, Tensor):
        for lo in range(0, inputs.shape[0], batch_size):
            yield inputs[lo : lo + batch_size]
        return
    loader = torch.utils.data.DataLoader(inputs, batch_size=batch_size, shuffle=False)
    for batch in loader:
        batch = batch[0] if isinstance(batch, (tuple, list)) else batch
        yield batch.to(device, non_blocking=True)


def _mean_fn(f: Tensor, lik: Likelihood) -> Tensor:
    """``A'(f)`` in float64 (the softmax by hand: torch.softmax is several times slower over a short last axis)."""
    f = f.double()
    if lik is Likelihood.SOFTMAX:
        g = (f - f.amax(-1, keepdim=True)).exp_()
        return g.div_(g.sum(-1, keepdim=True))
    return torch.sigmoid(f) if lik is Likelihood.BERNOULLI else torch.exp(f)


def _jac_mean_fn(p: Tensor, df: Tensor, lik: Likelihood) -> Tensor:
    """``J_{A'}(f) df`` given ``p = A'(f)``; ``df`` may carry leading sample dimensions."""
    if lik is Likelihood.SOFTMAX:
        return p * df - p * (p * df).sum(-1, keepdim=True)
    return p * (1 - p) * df if lik is Likelihood.BERNOULLI else p * df


class _Looper(nn.Module):
    """``functional_call`` target whose forward is a whole pass over the data at the mean (see ``outputs``)."""

    def __init__(self, setup: _Setup):
        super().__init__()
        self.model = setup.model
        self._setup = [setup]  # a list: not registered as a submodule

    def forward(self) -> Tensor:
        return self._setup[0].outputs(None)


class _Setup:
    """Shared state of one estimation: model, sigmas, generator, data, labels."""

    def __init__(self, model, inputs, std, *, labels, samples, seed, generator, batch_size, likelihood):
        for name, value in (("samples", samples), ("batch_size", batch_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"{name} must be an integer >= 1, got {value!r}")
        self.model, self.samples, self.batch_size = model, samples, batch_size
        self.lik = Likelihood.parse(likelihood)
        first = next(model.parameters(), None)
        if first is None:
            raise InputError("the model has no parameters")
        self.device = first.device
        self.sigma = {n: s for n, s in resolve_std(model, std).items() if torch.any(s > 0)}
        self.mean = {n: p.detach() for n, p in model.named_parameters()}
        if not all(torch.isfinite(p).all() for p in self.mean.values()):
            raise InputError("the model's parameters hold NaN or inf; label noise needs finite weights")
        if isinstance(inputs, Tensor):
            if inputs.is_floating_point() and not torch.isfinite(inputs).all():
                raise InputError("inputs hold NaN or inf; label noise needs finite inputs")
            inputs = inputs.to(self.device)  # moved once; every pass reads it again
        self.inputs = inputs
        self.n = len(inputs)
        if self.n == 0:
            raise InputError("inputs are empty")
        if labels is not None and len(labels) != self.n:
            raise InputError(f"labels has {len(labels)} entries but there are {self.n} inputs")
        if labels is not None and not np.isfinite(_as_float(labels)).all():
            raise InputError("labels hold NaN or inf; give class indices (N,) or finite targets (N, K)")
        self.labels = labels
        self.generator = generator or torch.Generator(device=self.device).manual_seed(seed)
        self._looper = _Looper(self)
        self._buffers: dict[str, Tensor] = {}  # reused per sample: no fresh allocation per draw
        self._thetas: dict[str, Tensor] = {}

    def _normal(self, name: str) -> Tensor:
        """``e ~ N(0, I)`` shaped like parameter ``name``, from the generator, into a reused buffer."""
        s, g = self.sigma[name], self.generator
        buf = self._buffers.get(name)
        if buf is None:
            buf = self._buffers[name] = torch.empty(s.shape, device=g.device, dtype=s.dtype)
        return buf.normal_(generator=g).to(s.device)

    def draw(self) -> dict[str, Tensor]:
        """``sigma * e`` for one sample (same order for every estimator)."""
        return {name: self.sigma[name] * self._normal(name) for name in self.sigma}

    def sample(self) -> dict[str, Tensor]:
        """``theta_s = m + sigma * e`` (same draws as :meth:`draw`), written into reused buffers."""
        out = {}
        for name, s in self.sigma.items():
            theta = self._thetas.get(name)
            if theta is None:
                theta = self._thetas[name] = torch.empty_like(self.mean[name])
            out[name] = torch.addcmul(self.mean[name], s, self._normal(name), out=theta)
        return out

    def batches(self):
        return _batches(self.inputs, self.batch_size, self.device)

    def outputs(self, params: dict[str, Tensor] | None) -> Tensor:
        """Model outputs (N, K) over the whole dataset, at the mean (``params`` None) or at ``params``."""
        if params is not None:  # swap the parameters in once for all batches, not once per batch
            return functional_call(self._looper, {f"model.{n}": t for n, t in params.items()}, ())
        out, lo = None, 0
        for x in self.batches():
            f = self.model(x)
            f = f[:, None] if f.ndim == 1 else f  # one output per example: (B,) -> (B, 1)
            if out is None:
                out = torch.empty((self.n, *f.shape[1:]), dtype=f.dtype, device=f.device)
            out[lo : lo + len(f)] = f
            lo += len(f)
        return out

    def mean_outputs(self) -> Tensor:
        """Outputs (N, K) at the mean; InputError when not finite (NaN/inf in a Dataset's inputs)."""
        out = self.outputs(None)
        if not torch.isfinite(out).all():
            raise InputError("the model's outputs at the mean are NaN or inf; check the inputs for NaN/inf")
        return out

    def finish(self, noise, step0, sum_sq_norm, probs, stderr, draws, method) -> NetworkNoise:
        to_np = lambda t: None if t is None else t.detach().cpu().numpy().astype(np.float64)  # noqa: E731
        noise, probs = to_np(noise), to_np(probs)
        smoothed = None
        if self.labels is not None:
            smoothed = _targets(self.labels, probs.shape, self.lik) + noise
        return NetworkNoise(
            noise=noise,
            magnitude=np.linalg.norm(noise, axis=1),
            step_noise=to_np(step0),
            step_rms=np.sqrt(to_np(sum_sq_norm) / self.samples),
            probs=probs,
            stderr=to_np(stderr),
            smoothed_labels=smoothed,
            draws=to_np(draws),
            method=method,
            samples=self.samples,
        )


def _as_float(labels) -> np.ndarray:
    arr = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"labels must be numbers, got an array of {arr.dtype}")
    return arr.astype(np.float64)


def _targets(labels, shape, lik) -> np.ndarray:
    y = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if y.shape[0] != shape[0]:
        raise InputError(f"labels has {y.shape[0]} entries but there are {shape[0]} inputs")
    if lik is Likelihood.SOFTMAX and y.ndim == 1:
        if y.min() < 0 or y.max() >= shape[1]:
            raise InputError(f"labels must be class indices in [0, {shape[1]}), got range [{y.min()}, {y.max()}]")
        return np.eye(shape[1])[y]
    return y.reshape(shape).astype(np.float64)


class _EvalMode:
    def __init__(self, model):
        self.model, self.was_training = model, model.training

    def __enter__(self):
        self.model.eval()
        self.grad = torch.is_grad_enabled()
        torch.set_grad_enabled(False)

    def __exit__(self, *exc):
        torch.set_grad_enabled(self.grad)
        self.model.train(self.was_training)


def expected_label_noise(
    model: nn.Module,
    inputs,
    std,
    *,
    labels=None,
    samples: int = 32,
    seed: int = 0,
    generator: torch.Generator | None = None,
    batch_size: int = 512,
    likelihood: str | Likelihood = "softmax",
    keep_draws: bool = False,
    progress: bool = False,
) -> NetworkNoise:
    """Monte-Carlo expected noise, per-step noise and its RMS magnitude over a dataset.

    ``inputs``: a Tensor (N, ...) (moved to the model's device once) or a map-style Dataset whose item is the input
    (or an ``(input, ...)`` tuple). ``std``: see :func:`resolve_std`. ``labels``: (N,) class indices or (N, K) to
    get ``smoothed_labels``. Cost: S + 1 forward passes over the data (one at the mean).
    """
    st = _Setup(
        model,
        inputs,
        std,
        labels=labels,
        samples=samples,
        seed=seed,
        generator=generator,
        batch_size=batch_size,
        likelihood=likelihood,
    )
    with _EvalMode(model):
        probs = _mean_fn(st.mean_outputs(), st.lik)  # (N, K) at the mean
        total, total_sq = torch.zeros_like(probs), torch.zeros_like(probs)
        step0 = None
        draws = torch.empty((samples, *probs.shape), dtype=torch.float64) if keep_draws else None
        for s in tqdm(range(samples), desc="noise (MC)", disable=not progress, leave=False):
            params = st.sample()
            # whole-dataset bookkeeping once per sample: per-batch small ops would cost more than the forward
            eps = probs - _mean_fn(st.outputs(params), st.lik)
            total += eps
            total_sq.addcmul_(eps, eps)
            if s == 0:
                step0 = eps
            if keep_draws:
                draws[s] = eps.cpu()
        noise = total / samples
        stderr = None
        if samples > 1:
            var = (total_sq - samples * noise * noise).clamp_min(0) / (samples - 1)
            stderr = (var / samples).sqrt()
        sum_sq_norm = total_sq.sum(1)
    return st.finish(noise, step0, sum_sq_norm, probs, stderr, draws, NoiseMethod.MC.value)


def linearized_label_noise(
    model: nn.Module,
    inputs,
    std,
    *,
    labels=None,
    samples: int = 32,
    seed: int = 0,
    generator: torch.Generator | None = None,
    batch_size: int = 512,
    likelihood: str | Likelihood = "softmax",
    keep_draws: bool = False,
    sample_chunk: int | None = None,
    progress: bool = False,
) -> NetworkNoise:
    """Linearized per-step noise (Eq. 19) by forward-mode AD, with its RMS magnitude over ``samples`` draws.

    ``noise`` is draw 0's linearized noise. ``sample_chunk`` draws share one vmapped JVP (default: as many as keep
    ``chunk * batch_size <= 4096`` rows); memory grows with ``sample_chunk * batch_size``. Other arguments as in
    :func:`expected_label_noise`.
    """
    st = _Setup(
        model,
        inputs,
        std,
        labels=labels,
        samples=samples,
        seed=seed,
        generator=generator,
        batch_size=batch_size,
        likelihood=likelihood,
    )
    if sample_chunk is not None and (not isinstance(sample_chunk, int) or sample_chunk < 1):
        raise InputError(f"sample_chunk must be an integer >= 1 or None, got {sample_chunk!r}")
    chunk = sample_chunk or max(1, min(samples, 4096 // batch_size))
    names = list(st.sigma)
    primals = {n: st.mean[n] for n in names}
    probs = step0 = sum_sq_norm = draws = None
    with _EvalMode(model):
        for lo_s in tqdm(range(0, samples, chunk), desc="noise (linearized)", disable=not progress, leave=False):
            drawn = [st.draw() for _ in range(min(chunk, samples - lo_s))]
            tangents = {n: torch.stack([d[n] for d in drawn]) for n in names}
            lo = 0
            parts = []
            for x in st.batches():

                def fwd(p, x=x):
                    return functional_call(model, p, (x,))

                def one(t, fwd=fwd):
                    return jvp(fwd, (primals,), (t,))

                if names:
                    f, df = vmap(one, out_dims=(None, 0))(tangents)
                else:  # no parameter is random: the noise is 0
                    f = fwd(primals)
                    df = torch.zeros((len(drawn), *f.shape), dtype=f.dtype, device=f.device)
                if f.ndim == 1:  # one output per example
                    f, df = f[:, None], df[..., None]
                p = _mean_fn(f, st.lik)
                eps = -_jac_mean_fn(p, df.double(), st.lik)  # (chunk, B, K)
                if probs is None:
                    parts.append(p)
                sq = (eps * eps).sum(-1).sum(0)
                if sum_sq_norm is None:
                    sum_sq_norm = torch.zeros(st.n, dtype=torch.float64, device=sq.device)
                    step0 = torch.empty((st.n, eps.shape[-1]), dtype=torch.float64, device=eps.device)
                    if keep_draws:
                        draws = torch.empty((samples, st.n, eps.shape[-1]), dtype=torch.float64)
                sum_sq_norm[lo : lo + len(x)] += sq
                if lo_s == 0:
                    step0[lo : lo + len(x)] = eps[0]
                if keep_draws:
                    draws[lo_s : lo_s + len(drawn), lo : lo + len(x)] = eps.cpu()
                lo += len(x)
            if probs is None:
                probs = torch.cat(parts)
    if not torch.isfinite(probs).all():
        raise InputError("the model's outputs at the mean are NaN or inf; check the inputs for NaN/inf")
    return st.finish(step0, step0, sum_sq_norm, probs, None, draws, NoiseMethod.LINEARIZED.value)


def label_noise(model: nn.Module, inputs, std, *, method: str | NoiseMethod = "mc", **kwargs) -> NetworkNoise:
    """Dispatch to :func:`expected_label_noise` (``"mc"``) or :func:`linearized_label_noise` (``"linearized"``)."""
    try:
        method = NoiseMethod(method)
    except ValueError:
        raise InputError(f"unknown noise method {method!r}; choose one of: mc, linearized") from None
    fn = expected_label_noise if method is NoiseMethod.MC else linearized_label_noise
    return fn(model, inputs, std, **kwargs)
