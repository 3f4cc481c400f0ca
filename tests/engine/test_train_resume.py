"""Run folders, checkpoints and resume: an interrupted run continues bitwise; divergence keeps the last checkpoint."""

import json

import numpy as np
import pytest
import torch

from varsmooth.engine import TrainConfig, TrainingDiverged, train
from varsmooth.engine.checkpoint import load
from varsmooth.errors import InputError
from varsmooth.io import read_json


def _cfg(method, **kw):
    # a 4-epoch schedule that changes inside the interrupted part: cosine with warm-up, or a decay at epoch 3
    sched = {"schedule": "cosine", "warmup_epochs": 0.5} if method.startswith("ivon") else {"milestones": [1, 3]}
    if method.startswith("ivon"):
        sched["ess_factor"] = 1.0  # a fixed ess (ess="auto" is tested in test_ess_search.py)
    base = dict(method=method, train_subset=300, val_fraction=0.2, corruption="symmetric:0.3", batch_size=64, epochs=4,
                schedule_epochs=4, test_samples=3, progress=False, device="cpu", seed=3, **sched)  # fmt: skip
    return TrainConfig(**{**base, **kw})


class Boom(RuntimeError):
    pass


class Counter:
    """A checkpointed callback: counts epochs and batches it has seen."""

    def __init__(self, fail_at=None):
        self.epochs, self.batches, self.fail_at = [], 0, fail_at

    def __call__(self, epoch, state):
        if epoch == self.fail_at:
            raise Boom(f"killed during epoch {epoch}")
        self.epochs.append(epoch)

    def on_batch(self, epoch, pos, out, labels):
        self.batches += 1

    def state_dict(self):
        return {"epochs": list(self.epochs), "batches": self.batches}

    def load_state_dict(self, state):
        self.epochs, self.batches = list(state["epochs"]), state["batches"]


def _strip(history):
    return [{k: v for k, v in h.items() if k != "time_s"} for h in history]


def _assert_same_run(a, b, dir_a, dir_b):
    for (name, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    assert _strip(a.history) == _strip(b.history)
    za, zb = np.load(dir_a / "arrays.npz"), np.load(dir_b / "arrays.npz")
    assert sorted(za.files) == sorted(zb.files)
    for key in za.files:
        assert np.array_equal(za[key], zb[key]), key
    fa, fb = read_json(dir_a / "final.json"), read_json(dir_b / "final.json")
    assert {k: v for k, v in fa.items() if k != "time_s"} == {k: v for k, v in fb.items() if k != "time_s"}
    lines = [json.loads(line) for line in (dir_b / "metrics.jsonl").read_text().splitlines()]
    assert _strip(lines) == _strip(a.history)


@pytest.mark.parametrize("method", ["ivon", "sam", "ols"])
def test_interrupted_run_resumes_bitwise(method, mnist, tmp_path):
    full_dir, short_dir, crash_dir = tmp_path / "full", tmp_path / "short", tmp_path / "crash"
    full = train(_cfg(method), full_dir, data=mnist, callbacks=[Counter()])

    # (1) stop after epoch 2 of the same 4-epoch schedule, then continue to 4 from the checkpoint
    train(_cfg(method, epochs=2), short_dir, data=mnist)
    assert load(short_dir / "checkpoint.pt").epoch == 2
    _assert_same_run(full, train(_cfg(method), short_dir, data=mnist), full_dir, short_dir)

    # (2) killed by an exception during epoch 3 (after epoch 2's checkpoint), then the same call again
    counter = Counter(fail_at=3)
    with pytest.raises(Boom):
        train(_cfg(method), crash_dir, data=mnist, callbacks=[counter])
    assert load(crash_dir / "checkpoint.pt").epoch == 2 and not (crash_dir / "final.json").exists()
    resumed_counter = Counter()
    resumed = train(_cfg(method), crash_dir, data=mnist, callbacks=[resumed_counter])
    _assert_same_run(full, resumed, full_dir, crash_dir)
    assert resumed_counter.epochs == [1, 2, 3, 4]  # restored from the checkpoint, then continued
    assert resumed_counter.batches == 4 * 4  # 240 training examples in batches of 64
    if method == "ols":
        assert torch.equal(full.method.ols.matrix, resumed.method.ols.matrix)
    if method == "ivon":
        for s, t in zip(full.method.posterior_std().values(), resumed.method.posterior_std().values(), strict=True):
            assert torch.equal(s, t)


def test_run_folder_contents(mnist, tmp_path):
    res = train(_cfg("ivon", epochs=1, schedule_epochs=None), tmp_path, data=mnist)
    cfg = read_json(tmp_path / "config.json")
    assert cfg["seed"] == 3 and cfg["config"]["method"] == "ivon" and "torch" in cfg["versions"]
    assert cfg["config"]["ess"] == 240.0  # N of the training part (300 minus 20% validation)
    final = read_json(tmp_path / "final.json")
    mask = np.load(tmp_path / "arrays.npz")["flip_mask"]
    assert final["corruption_realised_rate"] == pytest.approx(mask.mean()) and 0.2 < mask.mean() < 0.4
    for key in ("test_acc", "test_nll", "test_ece", "test_pred_acc", "val_acc", "val_pred_acc", "val_clean_acc"):
        assert np.isfinite(final[key]), key
    z = np.load(tmp_path / "arrays.npz")
    assert z["train_probs"].shape == z["train_probs_pred"].shape == (300, 10)
    assert z["test_probs"].shape == (1000, 10) and z["is_val"].sum() == 60
    assert np.array_equal(z["labels"] != z["clean_labels"], z["flip_mask"])
    assert np.array_equal(z["test_probs"], res.test_probs)
    # IVON's induced label noise eps_i = p_mean - p_pred, mean L2 size, from the saved predictions
    eps = z["train_probs"].astype(np.float64) - z["train_probs_pred"]
    assert final["train_noise_l2"] == pytest.approx(np.linalg.norm(eps, axis=1).mean()) and eps.any()
    eps = z["test_probs"].astype(np.float64) - z["test_probs_pred"]
    assert final["test_noise_l2"] == pytest.approx(np.linalg.norm(eps, axis=1).mean())
    # the recorded noisy labels are the ones trained on, drawn from the clean labels with the corruption seed
    assert np.array_equal(z["labels"], res.run.labels)


def test_mismatched_config_is_refused_and_nothing_changes(mnist, tmp_path):
    train(_cfg("sam", epochs=1, schedule_epochs=4), tmp_path, data=mnist)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(InputError, match="different config.*rho"):
        train(_cfg("sam", epochs=2, schedule_epochs=4, rho=0.1), tmp_path, data=mnist)
    with pytest.raises(InputError, match="schedule_epochs"):
        train(_cfg("sam", epochs=2, schedule_epochs=8), tmp_path, data=mnist)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_epochs_grow_under_the_default_schedule(mnist, tmp_path):
    # the schedule keeps the length it was resolved with: 2 epochs, then 3 == a lone 3-epoch run of a 2-epoch schedule
    grown_dir, lone_dir = tmp_path / "grown", tmp_path / "lone"
    train(_cfg("erm", epochs=2, schedule_epochs=None, milestones=None), grown_dir, data=mnist)
    grown = train(_cfg("erm", epochs=3, schedule_epochs=None, milestones=None), grown_dir, data=mnist)
    saved = read_json(grown_dir / "config.json")["config"]
    assert grown.config.schedule_epochs == saved["schedule_epochs"] == 2 and saved["epochs"] == 3
    lone = train(_cfg("erm", epochs=3, schedule_epochs=2, milestones=None), lone_dir, data=mnist)
    _assert_same_run(lone, grown, lone_dir, grown_dir)
    again = train(_cfg("erm", epochs=3, schedule_epochs=None, milestones=None), grown_dir, data=mnist)  # finished
    assert again.config.schedule_epochs == 2 and _strip(again.history) == _strip(grown.history)


def test_run_failing_before_its_first_checkpoint_leaves_nothing(mnist, tmp_path):
    cfg = _cfg("erm", lr=1e30, schedule_epochs=None)  # diverges in epoch 1
    with pytest.raises(TrainingDiverged, match="no checkpoint was written"):
        train(cfg, tmp_path / "new" / "run", data=mnist)
    assert not (tmp_path / "new").exists()  # no config.json, no empty metrics.jsonl, no folders


def test_eval_every_skips_test_evaluation_but_not_training(mnist, tmp_path):
    every = train(_cfg("ivon", epochs=3, schedule_epochs=None), None, data=mnist)
    sparse = train(_cfg("ivon", epochs=3, schedule_epochs=None, eval_every=2), None, data=mnist)
    assert ["test_acc" in h for h in sparse.history] == [False, True, True]  # every 2nd epoch and the last
    assert _strip(sparse.history)[1] == _strip(every.history)[1]  # evaluation never perturbs training
    for a, b in zip(every.model.state_dict().values(), sparse.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_finished_run_is_not_trained_again(mnist, tmp_path):
    first = train(_cfg("erm", epochs=2, schedule_epochs=None), tmp_path, data=mnist)
    seen = Counter()
    again = train(_cfg("erm", epochs=2, schedule_epochs=None), tmp_path, data=mnist, callbacks=[seen])
    assert seen.batches == 0 and seen.epochs == []
    assert _strip(again.history) == _strip(first.history)
    assert np.array_equal(again.test_probs, first.test_probs)


@pytest.mark.parametrize("method", ["erm", "ivon"])
def test_divergence_stops_and_keeps_last_good_checkpoint(method, mnist, tmp_path):
    # epoch 1 trains normally; from epoch 2 the step schedule multiplies the learning rate by 1e12
    cfg = _cfg(method, schedule="step", milestones=[1], lr_decay=1e12, warmup_epochs=0.0)
    with pytest.raises(TrainingDiverged, match=r"diverged at epoch 2.*last good checkpoint \(epoch 1\)") as err:
        train(cfg, tmp_path, data=mnist)
    assert err.value.last_good_epoch == 1  # what a sweep records in failure.json
    ck = load(tmp_path / "checkpoint.pt")
    assert ck.epoch == 1 and all(torch.isfinite(t).all() for t in ck.model.values())
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
    assert not (tmp_path / "final.json").exists()
