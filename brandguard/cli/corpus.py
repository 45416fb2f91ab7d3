"""``brandguard corpus``: build the brand-imagery corpus and DISC21-style benchmarks (data extra)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    try:
        from brandguard.datasets import corpus
    except ImportError:  # the data extra is not installed: the command is simply absent
        return
    p = sub.add_parser("corpus", help="build the brand-imagery corpus and DISC21-style benchmarks",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=(corpus.__doc__ or "").strip())
    corpus.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from brandguard.datasets import corpus

    return corpus.run(args)
