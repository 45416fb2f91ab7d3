"""``brandguard train {brand,base}``: retraining (its options live with it in ``brandguard.training.retrain``;
importing that is torch-free, torch loads inside the training functions)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    from brandguard.training import retrain

    p = sub.add_parser("train", help="retrain: `train brand BRAND` fine-tunes, gates and registers a model "
                       "for one brand; `train base` runs the base recipe into a registry",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=retrain.__doc__)
    retrain.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from brandguard.training import retrain

    return retrain.run(args)
