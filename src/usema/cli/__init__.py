"""The `usema` command: argument parsing only; every subcommand is one call into the Python API.

Modules: `pipeline` (plan, train, demo), `inference` (predict, export, evaluate), `research` (models, bench,
analyze, nnunet-plans), `options` (what several commands share).
"""

from __future__ import annotations

import argparse
import sys
import warnings

from usema import __version__


def _build_parser() -> argparse.ArgumentParser:
    from usema.cli import inference, pipeline, research

    parser = argparse.ArgumentParser(
        prog="usema",
        description="Medical image segmentation with SEMA attention: plan a dataset, train, predict, evaluate "
        "(and benchmarks, nnU-Net integration, model export).",
        epilog="usema COMMAND --help describes each command; the documentation's cli.md all of them.",
    )
    parser.add_argument(
        "--version", action="version", version=f"usema {__version__}", help="print the version and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    pipeline.add_commands(sub)
    inference.add_commands(sub)
    research.add_commands(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line, `usema: warning: ...`, without the Python source line that raised it."""
    print(f"usema: warning: {message}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `usema` command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _build_parser().parse_args(argv)
    from usema.errors import Interrupted, UsemaError
    from usema.utils.provenance import set_cli_argv

    set_cli_argv(argv)
    if getattr(args, "threads", None) is not None:
        import torch

        torch.set_num_threads(args.threads)

    try:
        with warnings.catch_warnings():  # restores the caller's way of showing warnings afterwards
            warnings.showwarning = _show_warning
            return args.func(args)
    except UsemaError as err:
        # A user error (bad file, bad plan, wrong checkpoint): one clear line, no traceback.
        print(f"usema {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        # Saved and stopped: a non-zero code, so that a following `&& usema predict` does not run.
        print(f"usema {args.command}: {stop}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        # Ctrl-C outside training's own handler: every file is written atomically, so what is there is whole;
        # one line instead of a traceback through torch, and the shell's code for SIGINT.
        again = " (--resume continues)" if getattr(args, "resume", None) is not None else ""
        print(f"usema {args.command}: interrupted; the files written so far are complete{again}", file=sys.stderr)
        return 130
