"""ivon-opt issue #8: should ``ess`` (lambda) scale the ``gradsq`` Hessian estimate? (docs/ivon-at-scale.md)

h is the curvature of the *average* per-example loss: sigma^2 = 1 / (lambda (h + delta)) is the posterior of lambda
examples, and "price" estimates E[grad^2 of the average loss] by Stein's lemma, with no lambda left over. The
squared gradient of a batch *mean* over B independent examples has expectation (at a minimum, where the
per-example gradients have mean zero) F / B, F the per-example Fisher = the Hessian of a well-specified model.
So lambda * g^2 estimates (lambda / B) H: lambda is the right factor only for a batch of lambda examples (the whole
data set when lambda = N); without any factor (the issue's proposal) g^2 estimates H / B. The test measures both
cases on a separable Gaussian model whose per-example Hessian is diag(a), in float64.
"""

import pytest
import torch

from varsmooth.optim import IVON

D, T, BURN = 200, 1200, 400


def _h_average(ess: float, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.linspace(0.5, 4.0, D, dtype=torch.float64)
    theta = torch.nn.Parameter(torch.zeros(D, dtype=torch.float64))  # the true mean: gradients are pure noise
    # lr 0 keeps the mean; a large weight decay makes sigma negligible, so g is the data's gradient noise only
    opt = IVON([theta], lr=0.0, ess=ess, hess_init=1.0, beta2=0.99, weight_decay=1e6, hess_approx="gradsq",
               generator=torch.Generator().manual_seed(0))  # fmt: skip
    data = torch.Generator().manual_seed(1)
    avg = torch.zeros(D, dtype=torch.float64)
    for t in range(T):
        y = torch.randn(batch, D, generator=data, dtype=torch.float64) / a.sqrt()  # y_ij ~ N(0, 1 / a_j)
        with opt.sampled_params(train=True):
            theta.grad = None
            (0.5 * a * (theta - y) ** 2).sum(1).mean().backward()  # per-example Hessian diag(a)
        opt.step()
        if t >= BURN:
            avg += opt.state[theta]["hess"] / (T - BURN)
    return avg, a


@pytest.mark.parametrize("ess, batch", [(64.0, 64), (64.0, 8)])
def test_gradsq_estimates_ess_over_batch_times_the_hessian(ess, batch):
    h, a = _h_average(ess, batch)
    ratio = h / (ess / batch * a)  # one per coordinate; Monte Carlo error ~4% each, ~0.3% on their mean
    assert abs(ratio.mean() - 1) < 0.02 and (ratio - 1).abs().max() < 0.25
    if batch != ess:  # so lambda g^2 is the Hessian only for a batch of lambda examples: here 8x too large
        assert (h / a).mean() > 6
