"""Label noise induced by variational learning (paper: "Variational Learning Induces Adaptive Label Smoothing", 2025).

- :mod:`.glm`: exact noise for GLMs, ``eps = A'(f_mean) - E_{N(f | f_mean, v)}[A'(f)]`` (Eq. 9, 12, 15, 24).
- :mod:`.variational`: variational GD (Thm. 1) and VON (Thm. 2, Eq. 17) with their noisy-label twins.
- :mod:`.network`: per-example noise of any network under a diagonal Gaussian posterior (MC and Eq. 19).
"""

from .glm import (
    Likelihood,
    SoftmaxQMC,
    bernoulli_noise,
    expected_sigmoid,
    expected_sigmoid_prime,
    glm_label_noise,
    log_expected_exp,
    mean_function,
    poisson_noise,
    softmax_noise,
)

__all__ = [
    "Likelihood",
    "SoftmaxQMC",
    "bernoulli_noise",
    "expected_sigmoid",
    "expected_sigmoid_prime",
    "glm_label_noise",
    "log_expected_exp",
    "mean_function",
    "poisson_noise",
    "softmax_noise",
]
