"""TensorBoard backend: event files in ``RUN/tb`` through ``torch.utils.tensorboard.SummaryWriter``.

Scalars per epoch under :func:`varsmooth.loggers.tag_of`'s tags (``test/test_acc``, ``ivon/sigma_median``,
``label_noise/train_noise_l1_noisy``, ...; step = epoch), the resolved config as hparams (the HParams dashboard,
with the final test accuracy, NLL and ECE as its metrics), the final metrics (``final/...``) and the figures as
images (``figures/<name>``). An ess search's rungs are its candidates' own runs (``RUN/ess-search/f<factor>/tb``).

Resume: each process writes the run's history from its first epoch again, with ``purge_step`` at that epoch, so
TensorBoard's readers drop what an earlier (killed) process wrote from there on: one run, no duplicate steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import Backend, RunContext, scalars, tag_of

__all__ = ["TensorBoardBackend", "TB_DIR"]

TB_DIR = "tb"
HPARAM_METRICS = ("final/test_acc", "final/test_nll", "final/test_ece")


class TensorBoardBackend(Backend):
    def __init__(self) -> None:
        self.writer: Any = None
        self.ctx: RunContext | None = None
        self.step = 0

    def open(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def _writer(self, first_step: int) -> Any:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter
            from torch.utils.tensorboard.summary import hparams

            assert self.ctx is not None
            self.writer = SummaryWriter(str(self.ctx.folder / TB_DIR), purge_step=first_step)
            metrics = HPARAM_METRICS
            if str(self.ctx.config.get("method", "")).startswith("ivon"):
                metrics += tuple(m.replace("test_", "test_pred_") for m in HPARAM_METRICS)
            for summary in hparams(self.ctx.config, dict.fromkeys(metrics, 0.0)):
                self.writer.file_writer.add_summary(summary)
        return self.writer

    def log_epochs(self, records: Sequence[Mapping[str, Any]]) -> None:
        writer = self._writer(int(records[0]["epoch"]))
        for record in records:
            self.step = int(record["epoch"])
            for key, value in scalars(record).items():
                writer.add_scalar(tag_of(key), value, self.step)
        writer.flush()  # live: visible in TensorBoard at once

    def log_final(self, values: Mapping[str, Sequence[tuple[int, float]]], files: Sequence[Path]) -> None:
        from PIL import Image

        writer = self._writer(self.step or 1)
        for name, series in values.items():
            if name.startswith("ess_search/"):  # the candidates' own runs (RUN/ess-search/fF/tb) show these scores
                continue
            for step, value in series:
                writer.add_scalar(name, value, step)
        for path in files:
            if path.suffix == ".png":
                with Image.open(path) as img:
                    pixels = np.asarray(img.convert("RGB"))
                writer.add_image(f"figures/{path.stem}", pixels, self.step, dataformats="HWC")
        writer.flush()

    def close(self, status: str) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
