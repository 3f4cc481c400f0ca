"""``varsmooth list``: every experiment, the paper figure it reproduces, and its presets."""

from __future__ import annotations

import argparse

from .. import experiments as ex


def add_arguments(p: argparse.ArgumentParser) -> None:
    del p  # no options


def main(args: argparse.Namespace) -> int:
    del args
    for exp_id in ex.experiments():
        print(f"{exp_id:16s} {ex.describe(exp_id)}  [presets: {', '.join(ex.presets(exp_id))}]")
    return 0
