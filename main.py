"""Atrous entry point: no arguments opens the GUI, subcommands run headless jobs.

Kept thin on purpose: each package registers its own subcommands
(``annotation.cli`` for projects and formats, ``model.cli`` for the network), and
heavy imports (torch, Qt) happen only inside the command that needs them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """The full command-line parser, with every package's subcommands."""
    from annotation import cli as annotation_cli
    from model import cli as model_cli

    parser = argparse.ArgumentParser(
        prog="atrous",
        description=(
            "Atrous: pre-label images with DeepLabV3, correct the masks, export VOC/COCO, "
            "fine-tune on the corrections. With no command, opens the desktop app."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    annotation_cli.register(sub)
    model_cli.register(sub)
    return parser


def _subcommand_names(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._subparsers._group_actions if parser._subparsers else []:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            return set(action.choices)
    return set()


def main(argv: Sequence[str] | None = None) -> int:
    """Run Atrous with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # `atrous` and `atrous PROJECT_OR_FOLDER` open the GUI; anything else is a command.
    if not args_list or (args_list[0] not in _subcommand_names(parser) and not args_list[0].startswith("-")):
        from gui.app import run_gui

        return run_gui(args_list[0] if args_list else None)
    args = parser.parse_args(args_list)
    from annotation.errors import AtrousError

    try:
        return int(args.func(args) or 0)
    except AtrousError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
