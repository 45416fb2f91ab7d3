"""``python -m brandguard.training.retrain {brand,base} ...``: the ``brandguard train`` command."""

from brandguard.training.retrain import main

if __name__ == "__main__":
    raise SystemExit(main())
