"""A preset resolves to typed run specs (name, tags, TrainConfig); the sweep records exactly the fields the preset
gives, so folders written before the split of _compare resume unchanged."""

import pytest

from varsmooth.engine import TrainConfig
from varsmooth.errors import InputError
from varsmooth.experiments import resolve_preset
from varsmooth.experiments.comparison import comparison_configs
from varsmooth.experiments.grids import TAGS, RunSpec, check_configs, run_config, run_spec


def test_a_preset_resolves_to_typed_run_specs():
    cfg = resolve_preset("noisy-accuracy", "smoke")
    spec = run_spec(cfg, "ivon", "symmetric:0.2", 1, ess_factor=0.5, h0=0.9)
    assert isinstance(spec.train, TrainConfig)
    assert (spec.train.method, spec.train.seed, spec.train.ess_factor, spec.train.hess_init) == ("ivon", 1, 0.5, 0.9)
    assert spec.name == "symmetric-0.2_ivon_ess_factor0.5_h00.9_s1" and set(TAGS) <= set(spec.tags)
    sweep = spec.sweep_config()
    assert sweep == run_config(cfg, "ivon", "symmetric:0.2", 1, ess_factor=0.5, h0=0.9)
    assert set(sweep) == {"name", "tags", "train"} and list(sweep["train"]) == list(spec.given)
    assert "progress" not in sweep["train"]  # only what the preset gives: TrainConfig's defaults stay implicit
    assert RunSpec.from_sweep(sweep) == spec and RunSpec.from_sweep({**sweep, "test_subset": 5}).options == {
        "test_subset": 5}  # fmt: skip
    auto = run_spec(cfg, "ivon", "symmetric:0.2", 1, ess_factor="auto")
    assert auto.train.ess == "auto" and auto.tags["ess_factor"] == "auto"


def test_every_comparison_config_is_a_checked_spec():
    cfg = resolve_preset("noisy-accuracy", "smoke")
    configs, fixed = comparison_configs(cfg, [(c, c, {}) for c in cfg["corruptions"]])
    check_configs(configs)
    check_configs([RunSpec.from_sweep(c) for c in configs])
    assert {c["tags"]["method"] for c in configs} == {"erm", "ls", "sam", "ivon"} and set(fixed) == set(
        cfg["corruptions"])  # fmt: skip
    with pytest.raises(InputError, match="unknown training option"):
        RunSpec.from_sweep({**configs[0], "train": {**configs[0]["train"], "nope": 1}})


@pytest.mark.parametrize("override", [
    {"train": {"seed": 5}},
    {"train": {"method": "erm"}},
    {"method_options": {"ivon": {"seed": 3}}},
    {"corruption_options": {"symmetric:0.2": {"all": {"seed": 3}}}},
])  # fmt: skip
def test_a_seed_or_method_the_sweep_would_replace_is_refused(override):
    """The sweep sets each run's seed and method: the same key in ``train`` or the per-method / per-corruption
    options was replaced without a word before; now it is one InputError naming where it was given."""
    cfg = resolve_preset("noisy-accuracy", "smoke", override)
    where = next(iter(override))
    with pytest.raises(InputError, match=rf"^{where}\..*(seed|method) is not allowed: the sweep sets"):
        run_spec(cfg, "ivon", "symmetric:0.2", 0)
