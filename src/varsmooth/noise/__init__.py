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
from .network import (
    NetworkNoise,
    NoiseMethod,
    expected_label_noise,
    label_noise,
    linearized_label_noise,
    resolve_std,
)
from .variational import (
    Trajectory,
    run_noisy_gd,
    run_noisy_newton,
    run_variational_gd,
    run_von,
)

__all__ = [
    "Likelihood",
    "NetworkNoise",
    "NoiseMethod",
    "Trajectory",
    "expected_label_noise",
    "label_noise",
    "linearized_label_noise",
    "resolve_std",
    "run_noisy_gd",
    "run_noisy_newton",
    "run_variational_gd",
    "run_von",
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
