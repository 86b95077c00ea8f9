"""Command line: parse, call the library, print. No logic of its own.

``micronet-export [export] --variant m0 --format tflite --int8`` is the main job; ``info`` is a
sub-command. User errors print one line on stderr and exit non-zero, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from micronet_export import __version__
from micronet_export.errors import UserError
from micronet_export.model.variants import VARIANTS


def _info(argv: list[str]) -> int:
    from micronet_export.info import format_info, variant_info

    p = argparse.ArgumentParser(prog="micronet-export info", description="Describe a MicroNet variant.")
    p.add_argument("--variant", required=True, help=f"one of {', '.join(VARIANTS)}")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    info = variant_info(args.variant, input_size=args.input_size)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


SUBCOMMANDS = {"info": _info}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if argv and argv[0] in ("--version", "-V"):
        print(f"micronet-export {__version__}")
        return 0
    command = argv.pop(0) if argv and argv[0] in SUBCOMMANDS else "export"
    try:
        return SUBCOMMANDS[command](argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
