"""``--compile`` compiles IVON's model once (its samples swap storage, not shapes), with the eager run's accuracy;
and the training loop reads nothing back from the device per step (a constant number of read-backs per epoch).

On CPU the compile test uses the ``aot_eager`` backend (``VARSMOOTH_COMPILE_BACKEND``): the same graph capture and
recompile guards as ``inductor``, without the minutes of C++ compilation on this machine."""

import collections
import dataclasses

import pytest
import torch
from torch._dynamo.utils import counters
from torch.utils._python_dispatch import TorchDispatchMode

from varsmooth.engine import TrainConfig, train


def _cfg(**kw) -> TrainConfig:
    base = dict(method="ivon", epochs=3, batch_size=100, train_subset=1000, device="cpu", progress=False,
                test_samples=4, eval_batch_size=500, save_train_predictions=False)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def test_compiled_ivon_compiles_once_and_matches_eager(mnist, monkeypatch):
    monkeypatch.setenv("VARSMOOTH_COMPILE_BACKEND", "aot_eager")
    graphs = []

    def count(epoch, state):
        graphs.append(counters["stats"]["unique_graphs"])

    eager = train(_cfg(), data=mnist)
    torch._dynamo.reset()
    counters.clear()
    compiled = train(_cfg(compile=True), data=mnist, callbacks=[count])
    torch._dynamo.reset()
    # one graph for training (every IVON sample of every step) and one for evaluation (eval mode), compiled in the
    # first epoch; 30 steps and 3 evaluations later, still two: no recompile
    print("graphs compiled after each epoch:", graphs, "recompiles:", dict(counters["recompiles"]))
    assert graphs == [2, 2, 2]
    assert sum(counters["recompiles"].values()) == 0
    for key in ("test_acc", "test_pred_acc", "train_loss"):
        assert compiled.metrics[key] == pytest.approx(eager.metrics[key], abs=0.005), key
    # the checkpointed model is the plain module (no "_orig_mod." keys)
    assert set(compiled.model.state_dict()) == set(eager.model.state_dict())


# every op that makes the host wait for a CUDA device: a scalar read (item, float, bool, int: all go through
# _local_scalar_dense) and the ops whose output size depends on the data
_SYNC_OPS = ("_local_scalar_dense", "nonzero", "masked_select", "bincount", "unique", "_unique2", "unique_dim")


class _CountSyncs(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in _SYNC_OPS or (name == "index" and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None)):
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


def _syncs(cfg: TrainConfig, data, monkeypatch) -> collections.Counter:
    mode = _CountSyncs()
    for name in ("cpu", "numpy", "tolist"):  # host copies: no dispatch on CPU tensors, so counted here
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, _name=name, **kw):
            mode.counts[_name] += 1
            return _real(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, counted)
    with mode:
        train(cfg, data=data)
    monkeypatch.undo()
    return mode.counts


@pytest.mark.parametrize("method", ["erm", "ols", "sam", "ivon"])
def test_no_read_back_per_step(method, mnist, monkeypatch):
    """The same number of read-backs with 10 steps per epoch as with 40: none of them is per step (IVON: one per
    step, its non-finite guard, and no other)."""
    cfg = _cfg(method=method, epochs=2, test_samples=2)
    few = _syncs(dataclasses.replace(cfg, batch_size=100), mnist, monkeypatch)
    many = _syncs(dataclasses.replace(cfg, batch_size=25), mnist, monkeypatch)
    print(method, "read-backs in 2 epochs with 10 steps/epoch:", dict(few), "with 40:", dict(many))
    if method == "ivon":  # IVON's guard: one read per optimizer step of whether its h_hat is finite (a NaN or inf
        # gradient skips the step instead of entering the state), as torch's GradScaler reads found_inf; nothing else
        guard = collections.Counter({"_local_scalar_dense": 2 * (40 - 10)})
        assert many - few == guard and few - many == collections.Counter()
        return
    assert few == many
    assert sum(few.values()) > 0  # the counter sees the per-epoch reads (metrics, evaluation)


def test_the_counter_sees_each_kind_of_read_back():
    mode, x = _CountSyncs(), torch.randn(5)
    with mode:
        float(x.sum()), x.sum().item(), bool(x[0] > 0), x[x > 0], torch.bincount(torch.tensor([1, 2]))
    assert mode.counts == {"_local_scalar_dense": 3, "index": 1, "bincount": 1}
