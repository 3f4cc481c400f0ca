"""IVON under PyTorch Lightning, both ways (CPU, synthetic data, seconds):

- automatic optimization: ``configure_optimizers`` returns IVON; ``IVON.step(closure)`` runs Lightning's closure
  (zero_grad, training_step, backward) inside ``sampled_params(train=True)``, ``mc_samples`` times;
- manual optimization: the training step opens ``sampled_params`` itself, once per MC sample.

    python examples/lightning_ivon.py
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from varsmooth.optim import IVON


class AutoIVON(L.LightningModule):
    """Automatic optimization: nothing IVON-specific but ``configure_optimizers``."""

    def __init__(self, net: nn.Module, ess: float, **ivon_kw):
        super().__init__()
        self.net, self.ess, self.ivon_kw = net, ess, ivon_kw

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return IVON(self.parameters(), ess=self.ess, **self.ivon_kw)


class ManualIVON(AutoIVON):
    """Manual optimization: one ``sampled_params(train=True)`` block per MC sample, then one step."""

    def __init__(self, net: nn.Module, ess: float, mc_samples: int = 1, **ivon_kw):
        super().__init__(net, ess, **ivon_kw)
        self.mc_samples = mc_samples
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        x, y = batch
        opt = self.optimizers()  # Lightning's wrapper; .optimizer is the IVON instance
        for _ in range(self.mc_samples):
            with opt.optimizer.sampled_params(train=True):
                opt.zero_grad()
                loss = F.cross_entropy(self.net(x), y)
                self.manual_backward(loss)
        opt.step()
        return loss


def trainer(max_steps: int, **kw) -> L.Trainer:
    return L.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, **kw)  # fmt: skip


def main() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(512, 20), torch.randint(0, 3, (512,))
    loader = DataLoader(TensorDataset(x, y), batch_size=64)
    for cls in (AutoIVON, ManualIVON):
        net = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 3))
        module = cls(net, ess=len(x), lr=0.1, beta2=1 - 2 / 80)  # 80 steps: a Hessian horizon the run can learn
        trainer(80).fit(module, loader)
        with torch.no_grad():
            acc = (net(x).argmax(-1) == y).float().mean().item()
        print(f"{cls.__name__}: train accuracy {acc:.3f}")


if __name__ == "__main__":
    main()
