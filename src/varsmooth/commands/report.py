"""``varsmooth report DIR [--title T] [--max-rows N]``: write DIR/report.html (self-contained) and DIR/results.md."""

from __future__ import annotations

import argparse

from ..report import write_report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", metavar="DIR", help="a folder written by `varsmooth run ... --out DIR`")
    p.add_argument("--title", default=None, help="page title (default: 'varsmooth report: <folder name>')")
    p.add_argument("--max-rows", type=int, default=100, help="longest results table shown per experiment")


def main(args: argparse.Namespace) -> int:
    path = write_report(args.out, title=args.title, max_rows=args.max_rows)
    print(f"report -> {path} (tables also in {path.with_name('results.md')})")
    return 0
