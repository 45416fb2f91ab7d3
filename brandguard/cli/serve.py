"""``brandguard serve``: the HTTP service (its options live with it in ``brandguard.serve.__main__``)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    # Importing brandguard.serve.__main__ is cheap (argparse only); FastAPI loads in `run`.
    from brandguard.serve import __main__ as serve_cli

    p = sub.add_parser("serve", help="run the HTTP service (check, leads, complaints, review page)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=(
                           "Serve one indexed bundle over HTTP with micro-batched inference (needs the serve\n"
                           "extra). Options fall back to BRANDGUARD_* environment variables. The default host\n"
                           "is 127.0.0.1. `brandguard serve create-key ROLE` makes an API key (admin, scanner\n"
                           "or brand:<name>) and prints its token once."))
    serve_cli.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from brandguard.serve.__main__ import run as serve

    return serve(args)
