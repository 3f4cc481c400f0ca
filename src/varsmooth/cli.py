"""The ``varsmooth`` command line.

Each subcommand lives in the module that owns the concept: that module provides ``add_arguments(parser)`` and
``main(args) -> int``, and is imported only when its subcommand runs. Bad input (:class:`InputError`, argparse
errors) and every operating-system error (disk full, read-only folder, a file in the way:
:func:`varsmooth.errors.os_error_message`) print one line ``varsmooth: error: ...`` and exit with code 2, with no
traceback. Exit code 1 is only for a training run that failed (diverged) and was recorded as such.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import InputError, os_error_message
from .io import missing_folders, remove_empty

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("varsmooth.commands.run", "run an experiment (a paper figure); with no argument, the default demo"),
    "list": ("varsmooth.commands.listing", "list every experiment and its presets"),
    "train": ("varsmooth.commands.train", "train one model with one method on one (possibly noisy) dataset"),
    "suspects": ("varsmooth.commands.suspects", "rank label errors: an IVON checkpoint's examples, or your own data"),
    "report": ("varsmooth.commands.report", "write one self-contained report.html for a results folder"),
}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        sys.stderr.write(f"varsmooth: error: {message}\n")
        raise SystemExit(2)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="varsmooth", description="Variational learning induces adaptive label smoothing.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"varsmooth {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:  # only the chosen subcommand imports its module (torch is slow to import)
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    for name in _PATHS:  # '' is the current folder to the OS: never what was meant
        if getattr(args, name, None) == "":
            flag = "DIR" if (args.command, name) == ("report", "out") else f"--{name.replace('_', '-')}"
            sys.stderr.write(f"varsmooth: error: {flag} '' is empty; give a path (. for the current folder)\n")
            return 2
    made = _outputs(args)  # the folders of --out (and report's --into) that do not exist yet
    try:
        return int(importlib.import_module(SUBCOMMANDS[args.command][0]).main(args) or 0)
    except InputError as err:
        remove_empty(made)  # a refused command leaves no folder it made
        sys.stderr.write(f"varsmooth: error: {_one_line(str(err))}\n")
        return 2
    except BrokenPipeError:  # stdout closed early (`varsmooth ... | head -1`): stop quietly, as a shell tool does
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is not a file (captured)
            pass
        return 141
    except OSError as err:  # disk full, read-only folder, permissions, a file where a folder should be
        remove_empty(made)
        sys.stderr.write(f"varsmooth: error: {os_error_message(err)}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("varsmooth: interrupted\n")
        return 130


_PATHS = ("out", "into", "data", "labels", "checkpoint", "data_dir", "noisy_labels")


def _outputs(args: argparse.Namespace) -> list:
    """The missing folders above and of the output paths of ``args``, deepest first."""
    if args.command == "report":
        targets = [os.path.dirname(args.into) if args.into else None]
    else:
        targets = [getattr(args, "out", None)]
    return [p for t in targets if t for p in missing_folders(t)]


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    raise SystemExit(main())
