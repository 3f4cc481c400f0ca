"""The training engine: one loop (:func:`train`) for every method, dataset and model (see ``docs/design.md``).

- :mod:`.trainconfig`: :class:`TrainConfig` (every option, also the ``varsmooth train`` flags), its resolution
  against the method's defaults and the run's length (the Hessian horizon ``beta2 = 1 - 2 / steps``);
- :mod:`.methods`: ERM, LS (Eq. 1), OLS, SAM and IVON (Alg. 1) as strategy objects carrying their defaults;
- :mod:`.train`: the loop; :mod:`.runfolder`: the device, resume checks and what a run writes when;
  :mod:`.batches`: the batches of an epoch; :mod:`.finish`: final metrics and arrays; :mod:`.precision`:
  autocast, channels-last, ``torch.compile``; :mod:`.evaluation`: :func:`predict_split` (``p_mean``, ``p_pred``)
  and :func:`noise_summary` (the induced label noise ``eps = p_mean - p_pred``, Eq. 9);
- :mod:`.rundata`: the data of a run (subset, corruption, validation split) and the seeding rule;
- :mod:`.checkpoint`: the checkpoint schema and :func:`restore`; :mod:`.schedules`, :mod:`.parallel`;
- :mod:`.ess_search`: ``ess="auto"``, IVON's ess chosen on a noisy validation split at the end of training.
"""

from .checkpoint import Checkpoint, restore
from .evaluation import noise_summary, predict_split
from .methods import METHODS, Method, StepOutput, build_method, method_defaults
from .rundata import RunData, prepare, seed_int
from .train import TrainingDiverged, TrainResult, TrainState, build, train
from .trainconfig import (
    HESSIAN_HORIZON,
    MAX_INT,
    TrainConfig,
    check_device,
    finalize_config,
    hessian_horizon_beta2,
    resolve_config,
)

__all__ = [
    "TrainConfig", "resolve_config", "finalize_config", "hessian_horizon_beta2", "HESSIAN_HORIZON", "MAX_INT",
    "check_device",
    "train", "TrainResult", "TrainState", "TrainingDiverged", "build",
    "METHODS", "Method", "StepOutput", "build_method", "method_defaults",
    "RunData", "prepare", "seed_int",
    "predict_split", "noise_summary",
    "Checkpoint", "restore",
]  # fmt: skip
