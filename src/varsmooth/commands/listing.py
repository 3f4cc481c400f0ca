"""``varsmooth list``: every experiment, the paper figure it reproduces, and its presets; the default demo first.

Reads the experiment modules' ``ID`` / ``DESCRIPTION`` and the preset files without importing any experiment (or
torch), so it answers at once."""

from __future__ import annotations

import argparse

from .. import experiments as ex


def add_arguments(p: argparse.ArgumentParser) -> None:
    del p  # no options


def main(args: argparse.Namespace) -> int:
    del args
    ids = sorted(ex.experiments(), key=lambda i: i != ex.DEFAULT_EXPERIMENT)  # the default first, then paper order
    for exp_id in ids:
        default = "  (the default: `varsmooth run`)" if exp_id == ex.DEFAULT_EXPERIMENT else ""
        print(f"{exp_id:16s} {ex.describe(exp_id)}  [presets: {', '.join(ex.presets(exp_id))}]{default}")
    return 0
