"""AUM and forgetting events from the engine's per-step callback; the ``aum`` package (Pleiss et al.) as the oracle."""

from __future__ import annotations

import numpy as np
import torch
from aum import AUMCalculator
from sklearn.datasets import make_blobs

from varsmooth.data import LabeledData, LabeledSplit
from varsmooth.detect import TrainingDynamics
from varsmooth.engine import TrainConfig, train


class _AumOracle:
    def __init__(self, tmp):
        self.calc = AUMCalculator(str(tmp), compressed=True)

    def __call__(self, epoch, state):
        pass

    def on_batch(self, epoch, pos, out, labels):
        self.calc.update(out.logits.detach().float(), labels, [int(i) for i in pos])


def test_aum_matches_the_aum_package_and_flags_flips(tmp_path):
    x, y = make_blobs(n_samples=120, centers=[[-3, 0], [3, 0], [0, 4]], cluster_std=0.8, random_state=0)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    flips = np.arange(0, 120, 20)
    noisy = y.copy()
    noisy[flips] = (y[flips] + 1) % 3
    split = LabeledSplit(torch.from_numpy(x), torch.from_numpy(noisy))
    data = LabeledData("blobs", split, split.subset(np.arange(10)), 3, (2,), ["a", "b", "c"])
    dyn, oracle = TrainingDynamics(120), _AumOracle(tmp_path)
    cfg = TrainConfig(dataset="blobs", method="erm", epochs=8, batch_size=16, lr=0.1, progress=False,
                      model_options={"hidden": [16]}, save_train_predictions=False)  # fmt: skip
    train(cfg, None, callbacks=[dyn, oracle], data=data)
    theirs = np.array([oracle.calc.sums[i] / oracle.calc.counts[i] for i in range(120)])
    np.testing.assert_allclose(dyn.aum(), theirs, rtol=1e-5, atol=1e-6)
    assert np.all(dyn.count == 8)  # one margin per epoch per example
    top = np.argsort(-dyn.aum_scores())[: len(flips)]
    assert len(set(top) & set(flips)) >= len(flips) - 1
    forget = dyn.forgetting_scores()
    assert forget.shape == (120,) and forget[flips].mean() > forget[np.setdiff1d(np.arange(120), flips)].mean()


def test_forgetting_counts_transitions_by_hand():
    dyn = TrainingDynamics(3)

    class Out:
        def __init__(self, logits):
            self.logits = torch.tensor(logits)

    labels = torch.tensor([0, 0, 0])
    for z in ([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]],
              [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]):  # fmt: skip
        dyn.on_batch(1, np.arange(3), Out(z), labels)
    # example 0: right, wrong, right, wrong -> 2 forgets; 1: right, right, wrong, right -> 1; 2: never right
    assert dyn.forgetting_scores().tolist() == [2.0, 1.0, 3.0]
    np.testing.assert_allclose(dyn.aum(), [0.0, 0.5, -1.0])
