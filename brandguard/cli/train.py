"""``brandguard train {brand,base}``: retraining (its options live with it in ``brandguard.training.retrain``;
importing that is torch-free, torch loads inside the training functions)."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Retrain the model and let a gate decide whether the result may replace what is served.

  brandguard train brand BRAND --references DIR --registry REG [--leads-db DB]
      fine-tune the served model for one brand from its reference images (and the reviewers'
      decisions on its leads, with --leads-db), then index, calibrate and gate it
  brandguard train base --registry REG [--minutes N]
      run the base training recipe into the registry as a new version

The gate scores the candidate against the version it would replace on the brand's own
benchmark and on a fixed cross-brand regression benchmark: it is promoted only if it is better
for its brand and not worse for everyone else (exit code 4 when rejected). Needs the train
extra (torch); see each subcommand's --help.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    from brandguard.training import retrain

    p = sub.add_parser("train", help="retrain: `train brand BRAND` fine-tunes, gates and registers a model "
                       "for one brand; `train base` runs the base recipe into a registry",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=DESCRIPTION)
    retrain.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from brandguard.training import retrain

    return retrain.run(args)
