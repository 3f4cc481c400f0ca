"""One rank of a 2-process IVONTrainer run on CPU (gloo), launched by test_hf_trainer.py with torch.distributed.run.

argv: OUTPUT_FILE STEPS MICRO_BATCH. Rank 0 saves the final weights (float64 model) to OUTPUT_FILE.
"""

from __future__ import annotations

import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"  # configs only: nothing is ever downloaded

import torch  # noqa: E402
from _hf_tiny import repeated_sequence, tiny_gpt2  # noqa: E402
from transformers import TrainingArguments  # noqa: E402

from varsmooth.integrations.hf import IVONTrainer  # noqa: E402

DDP_IVON = {"ess": 1e3, "hess_init": 0.1, "beta2": 0.999}


def main() -> None:
    out, steps, micro = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    model = tiny_gpt2(dtype=torch.float64)
    args = TrainingArguments(output_dir=os.path.dirname(out), per_device_train_batch_size=micro, max_steps=steps,
                             learning_rate=1.0, report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True,
                             seed=0, max_grad_norm=0.0, lr_scheduler_type="constant", ddp_backend="gloo",
                             ddp_find_unused_parameters=False, train_sampling_strategy="sequential")  # fmt: skip
    trainer = IVONTrainer(model=model, args=args, train_dataset=repeated_sequence(64), ivon_kwargs=DDP_IVON)
    trainer.train()
    if trainer.args.process_index == 0:
        assert trainer.args.world_size == 2, trainer.args.world_size
        torch.save({n: p.detach().clone() for n, p in model.named_parameters()}, out)
    # every rank waits for rank 0's save, then the process group is closed before the interpreter exits (a rank
    # leaving with gloo's threads still running aborted with "terminate called without an active exception")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
