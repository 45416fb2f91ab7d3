"""``python -m brandguard.training {train,export} ...``: the two training entry points."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: python -m brandguard.training {train,export} [--help | options]"
    if not args or args[0] in ("-h", "--help"):
        print(usage)
        return 0 if args else 2
    cmd, rest = args[0], args[1:]
    if cmd == "train":
        from brandguard.training.train import main as run
    elif cmd == "export":
        from brandguard.training.export import main as run
    else:
        print(usage, file=sys.stderr)
        return 2
    return run(rest)


if __name__ == "__main__":
    raise SystemExit(main())
