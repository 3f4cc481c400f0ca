"""Mixed precision in the engine: bf16 learns for every method (within a point of fp32 on the bundled data), fp16's
loss-scaled steps (run here on CPU at the method level; the CLI allows fp16 on CUDA only), and bad input."""

import dataclasses

import pytest
import torch

from varsmooth import cli
from varsmooth.engine import TrainConfig, build, finalize_config, prepare, resolve_config, train
from varsmooth.io import read_json

SEEDS = (0, 1, 2)


def _small(method: str, precision: str, seed: int) -> TrainConfig:
    return TrainConfig(method=method, precision=precision, seed=seed, epochs=3, batch_size=128, train_subset=2000,
                       model_options={"hidden": [128]}, device="cpu", progress=False, eval_every=3, test_samples=8,
                       save_train_predictions=False)  # fmt: skip


@pytest.mark.parametrize("method", ["erm", "ls", "ols", "sam", "ivon"])
def test_bf16_learns_within_a_point_of_fp32(method, mnist):
    """Mean test accuracy over 3 seeds (1,000 test images): bf16 within 1 point of fp32, both well above chance;
    IVON's predictive accuracy too. (The seed-to-seed spread of one fp32 run here is about 1.5 points.)"""
    acc = {}
    for precision in ("fp32", "bf16"):
        runs = [train(_small(method, precision, seed), data=mnist).metrics for seed in SEEDS]
        acc[precision] = {k: sum(m[k] for m in runs) / len(runs) for k in ("test_acc", "test_pred_acc")
                          if k in runs[0]}  # fmt: skip
    print(method, acc)
    for key, value in acc["fp32"].items():
        assert value > 0.8
        assert abs(acc["bf16"][key] - value) <= 0.01, (key, acc)


def test_bf16_changes_the_computation_and_keeps_state_float32(mnist, tmp_path):
    """bf16 runs the forward in bfloat16 (different numbers from fp32), records the precision in config.json, and
    keeps parameters and IVON's state in float32."""
    cfg = dataclasses.replace(_small("ivon", "bf16", 0), epochs=1, eval_every=1, train_subset=300)
    res = train(cfg, tmp_path / "run", data=mnist)
    ref = train(dataclasses.replace(cfg, precision="fp32"), data=mnist)
    assert read_json(tmp_path / "run" / "config.json")["config"]["precision"] == "bf16"
    assert res.metrics["train_loss"] != ref.metrics["train_loss"]
    assert all(p.dtype == torch.float32 for p in res.model.parameters())
    states = [s for s in res.optimizer.state.values() if "hess" in s]
    assert states and all(s[k].dtype == torch.float32 for s in states for k in ("hess", "momentum"))


@pytest.mark.parametrize("method", ["erm", "ls", "ols", "sam", "ivon"])
def test_fp16_steps_through_the_loss_scaler(method, mnist):
    """fp16 (autocast + GradScaler; here on CPU): the loss falls like fp32's on a fixed batch, and a step whose
    gradients overflow is skipped (every parameter unchanged) while the scale halves."""
    x, y = mnist.train.features[:128], mnist.train.labels[:128]
    losses = {}
    for precision in ("fp32", "fp16"):
        cfg = resolve_config(TrainConfig(method=method, precision=precision, device="cpu"))
        run = prepare(cfg, mnist)
        model, m = build(finalize_config(cfg, len(run.train_pos)), run, torch.device("cpu"),
                         generator=torch.Generator().manual_seed(0))  # fmt: skip
        losses[precision] = [float(m.train_step(x, y).loss) for _ in range(25)]
    last = {k: sum(v[-5:]) / 5 for k, v in losses.items()}  # IVON's losses are at posterior samples: noisy
    assert last["fp16"] < 0.6 * losses["fp16"][0]
    assert last["fp16"] == pytest.approx(last["fp32"], rel=0.5, abs=0.05)
    assert m.scaler is not None
    m.scaler.update(new_scale=torch.tensor(3.0e38))  # the scaled loss overflows
    before = [p.detach().clone() for p in model.parameters()]
    m.train_step(x, y)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert m.scaler.get_scale() == pytest.approx(1.5e38)


def _cli(argv, capsys):
    try:
        rc = cli.main(["train", *argv])
    except SystemExit as exc:
        rc = exc.code
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["--precision", "fp8"], "precision='fp8' is not allowed; use one of fp32, bf16, fp16"),
    (["--precision", "fp16", "--device", "cpu"], "precision='fp16' needs a CUDA device"),
    (["--compile", "--device", "cpu"], "unknown torch.compile backend 'no-such-backend'"),
])  # fmt: skip
def test_bad_precision_and_compile_one_line_exit_2_nothing_written(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VARSMOOTH_COMPILE_BACKEND", "no-such-backend")
    out = tmp_path / "run"
    rc, err = _cli([*argv, "--out", str(out), "--epochs", "1", "--no-progress"], capsys)
    assert rc == 2 and err.count("\n") == 1 and err.startswith("varsmooth: error: ") and message in err, err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_run_folder_from_before_precision_resumes(mnist, tmp_path):
    """A folder written before ``precision`` and ``compile`` existed holds neither: they count as fp32, off."""
    from varsmooth.engine import checkpoint as ckpt
    from varsmooth.io import write_json

    cfg = dataclasses.replace(_small("erm", "fp32", 0), epochs=1, eval_every=1, train_subset=200)
    out = tmp_path / "run"
    train(cfg, out, data=mnist)
    saved = ckpt.load(out / "checkpoint.pt")
    for key in ("precision", "compile"):
        del saved.config[key]
    ckpt.save(out / "checkpoint.pt", saved)
    header = read_json(out / "config.json")
    header["config"] = saved.config
    write_json(out / "config.json", header)
    assert len(train(dataclasses.replace(cfg, epochs=2), out, data=mnist).history) == 2
    with pytest.raises(Exception, match="precision differ"):
        train(dataclasses.replace(cfg, epochs=3, precision="bf16"), out, data=mnist)
