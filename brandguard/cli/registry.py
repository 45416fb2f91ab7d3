"""``brandguard registry {list,current,register,promote,rollback}``: versioned bundles per deployment."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from brandguard.registry import DEFAULT_DEPLOYMENT, WEIGHTS_FILE, Registry

DESCRIPTION = """\
A registry is a folder of model versions (v0001, v0002, ...), each a complete bundle checked file
by file, and which version each deployment ("default", "eu", ...) serves. Retraining adds
versions; nothing changes what is served until a version is promoted, and every promotion and
rollback is kept in the history. Scan and serve take --registry REG [--deployment NAME].

A version is promoted only if its evaluation gate passed (`brandguard train` runs the gate);
--force promotes one without (a first model, an emergency) and the history records it.

examples:
  brandguard registry list REG
  brandguard registry register REG my_bundle --create          # add a bundle as a new version
  brandguard registry promote REG v0002 --note "nike retrain"   # serve it (gate must have passed)
  brandguard registry rollback REG                              # back to the previous version
  brandguard registry current REG --deployment eu               # the bundle folder eu serves
"""


def add_parser(sub_commands: argparse._SubParsersAction) -> None:
    parser = sub_commands.add_parser("registry", help="model registry: list versions, promote, roll back",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description=DESCRIPTION)
    parser.set_defaults(func=run)
    sub = parser.add_subparsers(dest="registry_command", required=True,
                                metavar="{list,current,register,promote,rollback}")
    p = sub.add_parser("list", help="versions, their parents and gate decisions, and what each deployment serves")
    p.add_argument("registry")
    p = sub.add_parser("current", help="print the bundle folder a deployment serves")
    p.add_argument("registry")
    p.add_argument("--deployment", default=DEFAULT_DEPLOYMENT)
    p = sub.add_parser("register", help="add a bundle folder as a new version (verified; not promoted)")
    p.add_argument("registry")
    p.add_argument("bundle")
    p.add_argument("--parent", default=None, help="version it was derived from")
    p.add_argument("--weights", default=None, help="torch weights to keep with it (for later fine-tuning)")
    p.add_argument("--promote", action="store_true", help="also promote it (e.g. seeding a new registry; a bundle "
                   "registered by hand has no gate, so this needs --force)")
    p.add_argument("--force", action="store_true", help="promote without a passing gate (recorded in the history)")
    p.add_argument("--deployment", default=DEFAULT_DEPLOYMENT)
    p.add_argument("--create", action="store_true", help="create the registry folder if missing")
    p = sub.add_parser("promote", help="serve VERSION on a deployment (re-verifies every file first; only a "
                       "version whose gate passed, unless --force)")
    p.add_argument("registry")
    p.add_argument("version")
    p.add_argument("--deployment", default=DEFAULT_DEPLOYMENT)
    p.add_argument("--note", default="")
    p.add_argument("--force", action="store_true", help="promote without a passing gate (recorded in the history)")
    p = sub.add_parser("rollback", help="go back to the previously promoted version of a deployment")
    p.add_argument("registry")
    p.add_argument("--deployment", default=DEFAULT_DEPLOYMENT)
    p.add_argument("--note", default="")


def run(args: argparse.Namespace) -> int:
    cmd = args.registry_command
    if cmd == "register":
        reg = Registry(args.registry, create=args.create)
        src = Path(args.bundle)
        if args.weights:
            # Weights travel inside the version (hashed with it), so copy the bundle first.
            with tempfile.TemporaryDirectory() as tmp:
                staged = Path(tmp) / "bundle"
                shutil.copytree(src, staged)
                shutil.copyfile(args.weights, staged / WEIGHTS_FILE)
                version = reg.register(staged, parent=args.parent)
        else:
            version = reg.register(src, parent=args.parent)
        if args.promote:
            reg.promote(version, args.deployment, force=args.force)
        print(json.dumps({"version": version, "path": str(reg.version_dir(version)), "promoted": args.promote}))
        return 0
    reg = Registry(args.registry)
    if cmd == "list":
        print(json.dumps(reg.describe(), indent=2))
    elif cmd == "current":
        print(reg.current(args.deployment))
    elif cmd == "promote":
        print(json.dumps(asdict(reg.promote(args.version, args.deployment, args.note, force=args.force))))
    elif cmd == "rollback":
        print(json.dumps(asdict(reg.rollback(args.deployment, args.note))))
    return 0
