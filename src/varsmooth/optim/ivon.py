"""IVON optimizer (placeholder; full implementation follows)."""

import torch


class IVON(torch.optim.Optimizer):
    pass


def predictive_probs(model, opt, x, samples=1, generator=None):
    raise NotImplementedError
