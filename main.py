"""Atrous entry point: no arguments opens the GUI, subcommands run headless jobs.

Kept thin on purpose: each package registers its own subcommands
(``annotation.cli`` for projects and formats, ``model.cli`` for the network), the
GUI-or-command choice is made from argv before any of them is imported, and heavy
imports (torch, Qt) happen only inside the command that needs them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

#: Every subcommand that ``build_parser`` registers. ``main`` decides GUI vs command from
#: this set alone, so opening the app never imports the command modules and what they
#: pull in. tests/test_startup.py keeps it equal to the parser's.
COMMANDS = frozenset(
    {
        "new",
        "add",
        "remove",
        "import",
        "export",
        "info",
        "check",
        "prelabel",
        "models",
        "activate",
        "finetune",
        "evaluate",
    }
)


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run Atrous with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    # `atrous` and `atrous PROJECT_OR_FOLDER` open the GUI; anything else is a command
    # (or an option such as --help, which the parser answers).
    if not args_list or (args_list[0] not in COMMANDS and not args_list[0].startswith("-")):
        refused = _not_a_command(args_list)
        if refused:
            print(refused, file=sys.stderr)
            return 2
        from gui.app import run_gui

        return run_gui(args_list[0] if args_list else None)
    args = build_parser().parse_args(args_list)
    from annotation.errors import AtrousError

    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at exit
        return code
    except AtrousError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`atrous info P | head`): not an error of ours. Point stdout at
        # devnull so the interpreter's final flush does not raise again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _not_a_command(args: list[str]) -> str:
    """Why ``args`` cannot open the app ('' when they can): a mistyped command must not start a GUI.

    The app takes at most one argument, an existing project or image folder.
    """
    if not args:
        return ""
    if len(args) == 1 and Path(args[0]).exists():
        return ""
    import difflib

    close = difflib.get_close_matches(args[0], sorted(COMMANDS), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; commands: {', '.join(sorted(COMMANDS))}"
    what = "neither a command nor an existing project or image folder" if len(args) == 1 else "not a command"
    return f"atrous: error: '{args[0]}' is {what}{hint} (see atrous --help)"


if __name__ == "__main__":
    sys.exit(main())
