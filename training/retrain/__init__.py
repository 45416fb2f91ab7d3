"""Retrain the served model, and let a gate decide whether the result may replace it.

  brandguard train brand BRAND ...   fine-tune for one brand (retrain/brand.py; the brand's
                                     references, feedback labels and views: retrain/brand_data.py)
  brandguard train base ...          run the base recipe into the registry (retrain/base.py)

Either candidate is scored against the version it would replace on the brand's benchmark and a
fixed cross-brand regression benchmark (retrain/benchmark.py); the gate (retrain/gate.py)
promotes it only if it is better for its brand and not worse for everyone else.

This module is that command line; also: python -m brandguard.training.retrain {brand,base} ...
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from brandguard.errors import BrandguardError, BundleError, InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``brandguard train {brand,base}`` (wired from ``brandguard.cli.main``)."""
    from brandguard.training.retrain import base, brand

    sub = parser.add_subparsers(dest="train_command", metavar="{brand,base}", required=True)
    brand.add_parser(sub)
    base.add_parser(sub)


def run(args: argparse.Namespace) -> int:
    return int(args.train_func(args))


def main(argv: Sequence[str] | None = None) -> int:
    from brandguard.training.retrain.parent import FinetuneError

    parser = argparse.ArgumentParser(prog="python -m brandguard.training.retrain")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (BundleError, FinetuneError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except (InputError, BrandguardError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
