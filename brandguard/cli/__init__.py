"""The ``brandguard`` command line: ``main`` and one module per command (see ``main.py``)."""
