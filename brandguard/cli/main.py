"""The ``brandguard`` command line: the top-level parser and the one place errors become exit codes.

Each command lives in its own module of this package (``index``, ``scan``, ``evaluate``,
``calibrate`` with ``background``, ``demo``, ``serve``, ``corpus``, ``train``, ``registry``) as
``add_parser(sub)`` + ``run(args)``. Heavy imports happen inside ``run``, after thread counts
are set from the arguments, so ``brandguard --help`` is instant and no library starts a thread
pool of its own size.
"""

from __future__ import annotations

import argparse
import sys

from brandguard.cli import calibrate, corpus, demo, evaluate, index, registry, scan, serve, train
from brandguard.cli.common import EXIT_ARTIFACT, EXIT_OK, EXIT_USAGE, positive_int, set_threads

__all__ = ["EXIT_OK", "EXIT_USAGE", "EXIT_ARTIFACT", "build_parser", "main"]

EPILOG = """\
exit codes: 0 success · 1 unexpected failure · 2 bad arguments or input data ·
            3 bundle, index or registry version missing, corrupted or mismatched ·
            4 (train brand) the evaluation gate rejected the candidate

typical workflow:
  brandguard index refs/ --out my_bundle          # register brand imagery (uses the shipped model)
  brandguard scan catalogue.jsonl --bundle my_bundle --out scan/
  brandguard eval --references R --queries Q --ground-truth gt.csv --out eval/
  brandguard demo --out demo_out                   # everything above on a generated catalogue
  brandguard serve create-key scanner --leads-db leads.sqlite   # prints an API key once
  brandguard serve --bundle my_bundle --leads-db leads.sqlite   # HTTP API on 127.0.0.1:8080
  brandguard train brand acme --references refs/ --registry REG --leads-db leads.sqlite
  brandguard scan catalogue.jsonl --registry REG --out scan/   # what REG's "default" deployment serves
"""

COMMANDS = (index, scan, evaluate, calibrate, demo, serve, corpus, train, registry)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brandguard", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Find copies and knockoffs of registered brand imagery in marketplace listing photos.")
    from brandguard import __version__

    parser.add_argument("--version", action="version", version=f"brandguard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Thread counts must be in the environment before numpy/OpenCV load their pools, and
    # building the parser imports subcommand modules: read --threads first.
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--threads", type=positive_int, default=1)
    known, _ = pre.parse_known_args(argv)
    set_threads(max(1, known.threads))
    parser = build_parser()
    args = parser.parse_args(argv)
    from brandguard.errors import BrandguardError, BundleError, InputError, ReferenceIndexError
    from brandguard.registry import RegistryError

    try:
        return int(args.func(args) or 0)
    except (BundleError, ReferenceIndexError, RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ARTIFACT
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrandguardError as exc:  # training, gate and other typed failures: still no traceback
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ARTIFACT
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
