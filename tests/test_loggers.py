"""TensorBoard and MLflow loggers (varsmooth.loggers), read back with the tools' own readers: every per-epoch value
equals metrics.jsonl's, a killed and resumed run is one run without duplicate steps, an ess search logs its
candidates and rungs, `varsmooth run --log` reaches every run of a sweep, and bad input is one line."""

import json
import sys

import pytest

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

import varsmooth.engine.checkpoint as ckpt  # noqa: E402
from varsmooth.cli import main  # noqa: E402
from varsmooth.engine import TrainConfig, train  # noqa: E402
from varsmooth.errors import InputError  # noqa: E402
from varsmooth.loggers import RunLogger, scalars, tag_of  # noqa: E402
from varsmooth.loggers.mlflow import RUN_FILE, tracking_uri  # noqa: E402


@pytest.fixture(autouse=True)
def _local_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)


def _cfg(**kw):
    base = dict(method="ivon", ess_factor=1.0, train_subset=300, corruption="symmetric:0.3", batch_size=100,
                epochs=2, test_samples=2, model_options={"hidden": [16]}, progress=False, device="cpu", seed=1,
                loggers=["tensorboard", "mlflow"])  # fmt: skip
    return TrainConfig(**{**base, **kw})


def _history(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _tb(folder):
    acc = EventAccumulator(str(folder / "tb"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def _mlflow(root):
    client = MlflowClient(tracking_uri=tracking_uri(root))
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return client, runs


class Boom(RuntimeError):
    pass


def _killed(logger, status):
    """RunLogger.close as a kill leaves it: no writer closed, no MLflow run ended (what reached the store stays)."""
    for backend in logger.backends:
        if hasattr(backend, "worker"):
            backend.worker.shutdown(wait=True)


def test_kill_and_resume_is_one_run_whose_values_equal_metrics_jsonl(mnist, tmp_path, monkeypatch):
    out = tmp_path / "run"
    save, close = ckpt.save, RunLogger.close

    def save_or_die(path, ck):  # dies after epoch 2 was logged, before its checkpoint: epoch 2 runs twice
        if ck.epoch == 2:
            raise Boom("killed")
        save(path, ck)

    monkeypatch.setattr(ckpt, "save", save_or_die)
    monkeypatch.setattr(RunLogger, "close", _killed)
    with pytest.raises(Boom):
        train(_cfg(), out, data=mnist)
    monkeypatch.setattr(ckpt, "save", save)
    monkeypatch.setattr(RunLogger, "close", close)
    assert _mlflow(out)[1][0].info.status == "RUNNING"
    train(_cfg(), out, data=mnist)

    history = _history(out)
    assert [h["epoch"] for h in history] == [1, 2]
    # TensorBoard: one series per metric, steps 1..2 once each (the rewritten epoch 2 purged), values as written
    acc = _tb(out)
    for key in scalars(history[0]):
        events = acc.Scalars(tag_of(key))
        assert [e.step for e in events] == [1, 2], key
        assert [e.value for e in events] == pytest.approx([h[key] for h in history], rel=1e-6), key
    for tag in ("ivon/sigma_median", "ivon/h_ratio_q95", "label_noise/train_noise_l1_noisy", "test/test_pred_acc"):
        assert tag in acc.Tags()["scalars"]
    assert {"figures/reliability", "figures/noise_histogram"} <= set(acc.Tags()["images"])
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")

    # MLflow: one run (continued, not a second one), every metric's steps once each, values exactly metrics.jsonl's
    client, runs = _mlflow(out)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_id == json.loads((out / RUN_FILE).read_text())["run_id"]
    assert run.info.status == "FINISHED"
    for key in scalars(history[0]):
        logged = client.get_metric_history(run.info.run_id, key)
        assert sorted((m.step, m.value) for m in logged) == [(h["epoch"], h[key]) for h in history], key
    final = json.loads((out / "final.json").read_text())
    assert run.data.metrics["final/test_pred_acc"] == final["test_pred_acc"]
    resolved = json.loads((out / "config.json").read_text())["config"]
    assert run.data.params["lr"] == str(resolved["lr"]) and run.data.params["model_options.hidden"] == "[16]"
    assert {k: run.data.tags[k] for k in ("method", "corruption", "seed")} == {
        "method": "ivon", "corruption": "symmetric:0.3", "seed": "1"}  # fmt: skip
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert "final.json" in artifacts and {"figures/reliability.png", "figures/noise_histogram.png"} <= figures


def test_ess_search_logs_candidates_as_child_runs_and_its_rungs(mnist, tmp_path):
    out = tmp_path / "auto"
    train(_cfg(ess="auto", ess_factor=None, ess_grid=[1.0, 0.25], val_fraction=0.2, epochs=2, loggers=["mlflow"]),
          out, data=mnist)  # fmt: skip
    search = json.loads((out / "config.json").read_text())["ess_search"]
    client, runs = _mlflow(out)
    parent = json.loads((out / RUN_FILE).read_text())["run_id"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    assert len(runs) == 3 and sorted(r.data.tags["ess_factor"] for r in children) == ["0.25", "1.0"]
    # the final run continues the winner (epoch 1 from its checkpoint) to epoch 2: both epochs, once each
    assert [m.step for m in client.get_metric_history(parent, "train_loss")] == [1, 2]
    rung = search["rungs"][0]
    for factor, scores in rung["scores"].items():
        logged = client.get_metric_history(parent, f"ess_search/f{factor}/val_pred_nll")
        assert [(m.step, m.value) for m in logged] == [(rung["epochs"], scores["val_pred_nll"])]


def test_run_log_reaches_every_run_of_a_sweep(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["run", "fixed-hessian", "--preset", "smoke", "--set", "epochs=1", "--set", "fixed_hess_inits=[0.5]",
            "--log", "tensorboard", "--log", "mlflow", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    names = sorted(p.name for p in (out / "runs").iterdir())
    client, runs = _mlflow(out)
    assert len(names) == 2 and {r.info.experiment_id for r in runs} == {  # one experiment per sweep
        client.get_experiment_by_name("sweep").experiment_id}
    top = sorted(r.info.run_name for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert top == names
    for r in runs:
        assert r.data.tags["corruption"] == "symmetric:0.4" and r.data.tags["seed"] == "0"
    for name in names:
        run_dir = out / "runs" / name
        config = json.loads((run_dir / "config.json").read_text())["config"]
        assert config["loggers"] == ["tensorboard", "mlflow"]
        steps = [e.step for e in _tb(run_dir).Scalars("test/test_acc")]
        assert steps == [h["epoch"] for h in _history(run_dir)]


@pytest.mark.parametrize("command", ["train", "run"])
def test_missing_package_or_unknown_name_is_one_line_and_writes_nothing(command, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    head = ["train", "--epochs", "1"] if command == "train" else ["run", "demo", "--preset", "smoke"]
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    assert main([*head, "--log", "mlflow", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == "varsmooth: error: --log mlflow needs the mlflow package: pip install 'varsmooth[mlflow]'\n"
    assert main([*head, "--log", "wandb", "--out", str(out)]) == 2
    assert capsys.readouterr().err == "varsmooth: error: unknown logger 'wandb'; allowed: tensorboard, mlflow\n"
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_loggers_need_a_run_folder(mnist):
    with pytest.raises(InputError, match="write into the run folder"):
        train(_cfg(epochs=1), None, data=mnist)
