"""The command line: every command is registered, teaches in --help, and maps options to the
same typed options the library takes."""

from __future__ import annotations

import pytest

from brandguard.cli.common import depth_options
from brandguard.cli.main import COMMANDS, build_parser

NAMES = ("index", "scan", "eval", "calibrate", "background", "demo", "serve", "corpus", "train", "registry")


@pytest.mark.parametrize("name", NAMES)
def test_every_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([name, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: brandguard {name}") and len(text) > 200


def test_one_module_per_command_each_with_add_parser_and_run():
    for module in COMMANDS:
        assert callable(module.add_parser)
        assert callable(getattr(module, "run", None) or getattr(module, "run_calibrate", None))


@pytest.mark.parametrize("argv,depth,text", [
    (["scan", "c.jsonl", "--out", "o"], "auto", True),
    (["scan", "c.jsonl", "--out", "o", "--depth", "thorough", "--no-text"], "thorough", False),
    (["eval", "--references", "r", "--queries", "q", "--out", "o", "--depth", "fast"], "fast", True),
])
def test_depth_and_text_options_reach_the_pipeline_options(argv, depth, text):
    opts = depth_options(build_parser().parse_args(argv))
    assert (opts.depth, opts.text) == (depth, text)


def test_scan_and_eval_share_their_defaults():
    """eval measures what scan runs by default: same depth, text, regions and audit share."""
    p = build_parser()
    scan = p.parse_args(["scan", "c", "--out", "o"])
    ev = p.parse_args(["eval", "--references", "r", "--queries", "q", "--out", "o"])
    for key in ("depth", "text", "regions", "audit_share"):
        assert getattr(scan, key) == getattr(ev, key), key
