"""The large-model examples run offline on CPU in their tiny mode (configs only, nothing downloaded)."""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # configs only: nothing is ever downloaded
pytest.importorskip("transformers")
pytest.importorskip("peft")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_gpt2_ivon_tiny_learns(capsys):
    losses = load("gpt2_ivon").main(["--max-iters", "15", "--grad-accum", "1"])
    assert len(losses) == 15
    assert losses[0] > 3.5  # ~ log(64): untrained
    assert losses[-1] < 0.7 * losses[0], losses
    assert "loss: first step" in capsys.readouterr().out


def test_gpt2_ivon_real_needs_a_token_file(capsys):
    with pytest.raises(SystemExit) as exc:
        load("gpt2_ivon").main(["--real"])
    assert exc.value.code == 2 and "--data" in capsys.readouterr().err


def test_gpt2_ivon_real_config_is_the_authors_recipe():
    m = load("gpt2_ivon")
    cfg = m.Config(**m.REAL)
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size) == (12, 12, 768, 1024)
    assert (cfg.learning_rate, cfg.ess, cfg.hess_init, cfg.beta2, cfg.clip_radius, cfg.weight_decay) == (
        300.0, 1e10, 1e-3, 0.99999, 1e-3, 1e-6)  # fmt: skip


def test_hf_lora_ivon_tiny_trains_adapters_and_evaluates_the_predictive():
    out = load("hf_lora_ivon").main(["--steps", "6", "--predictive-samples", "2"])
    assert len(out["losses"]) == 6 and out["losses"][-1] < out["losses"][0]
    assert math.isfinite(out["eval_mean"]) and math.isfinite(out["eval_predictive"])
    assert out["eval_predictive"] != out["eval_mean"]
