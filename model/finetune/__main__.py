"""``python -m model.finetune PROJECT [options]``: the entry point for ``torchrun``.

The one module of :mod:`model.finetune` that imports the CLI; it runs only as
``__main__``, so the library imports no CLI and ``model.cli`` can import it.
"""

from __future__ import annotations

import sys

from ..finetune_cli import main_finetune


def main(argv: list[str] | None = None) -> int:
    """Run the ``finetune`` command's options from ``argv`` (default: ``sys.argv[1:]``)."""
    return main_finetune(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    raise SystemExit(main())
