"""The ``instructune`` command. Training itself runs through ``python train.py`` (Hydra)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="instructune", description="instruction-tuning research framework")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build-world", help="rebuild the embedded world, tokenizer and base model (see --help)",
                   add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "build-world":
        from instructune.world.build import main as build_main

        build_main(rest)


if __name__ == "__main__":
    main(sys.argv[1:])
