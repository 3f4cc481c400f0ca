"""``varsmooth report DIR [--title T] [--max-rows N] [--into FILE]``: write DIR/report.html (self-contained) and
DIR/results.md; with ``--into``, write the results digest (claims and pivots) into FILE between its markers instead
(:mod:`varsmooth.report.digest`)."""

from __future__ import annotations

import argparse

from ..report.digest import BEGIN, results_digest, sync_markdown
from ..report.html import write_report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", metavar="DIR", help="a folder written by `varsmooth run ... --out DIR`")
    p.add_argument("--title", default=None, help="page title (default: 'varsmooth report: <folder name>')")
    p.add_argument("--max-rows", type=int, default=100, help="longest results table shown per experiment")
    p.add_argument(
        "--into",
        metavar="FILE",
        default=None,
        help=f"instead of the report, write the claims and pivots of DIR's summaries into the Markdown FILE, "
        f"between the line {BEGIN!r} and the end marker (the rest of FILE is kept)",
    )


def main(args: argparse.Namespace) -> int:
    if args.into is not None:
        changed = sync_markdown(args.into, results_digest(args.out))
        print(f"results digest of {args.out} -> {args.into} ({'updated' if changed else 'unchanged'})")
        return 0
    path = write_report(args.out, title=args.title, max_rows=args.max_rows)
    print(f"report -> {path} (tables also in {path.with_name('results.md')})")
    return 0
