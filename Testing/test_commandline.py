"""spinemorph.commandline and spinemorph.argtypes: exit codes, one-line errors, command groups, value types."""

from __future__ import annotations

import argparse
import errno

import pytest

from spinemorph.argtypes import positive_float, positive_int
from spinemorph.commandline import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    OneLineParser,
    add_command_group,
    run_command,
)
from spinemorph.errors import InputError


def _raise(exc):
    def func(args):
        raise exc
    return func


@pytest.mark.parametrize("exc,code,words", [
    (InputError("no such series"), EXIT_FAILURE, ["error: no such series"]),
    (KeyboardInterrupt(), EXIT_INTERRUPTED, ["error: interrupted"]),
    (MemoryError(), EXIT_FAILURE, ["out of memory"]),
    (OSError(errno.ENOSPC, "No space left on device", "/out/x.nrrd"), EXIT_FAILURE, ["no space left", "/out/x.nrrd"]),
    (PermissionError(errno.EACCES, "Permission denied", "/in"), EXIT_FAILURE, ["permission denied", "/in"]),
    (ValueError("boom\nsecond line"), EXIT_FAILURE, ["internal error (ValueError: boom)", "'prog -v'"]),
])
def test_run_command_turns_failures_into_one_line(capsys, exc, code, words):
    assert run_command(_raise(exc), None, program="prog") == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for w in words:
        assert w in err


def test_run_command_returns_the_commands_code():
    assert run_command(lambda a: None, None) == 0
    assert run_command(lambda a: 3, None) == 3


def test_one_line_usage_error_and_command_group(capsys):
    parser = OneLineParser(prog="tool")
    sub = parser.add_subparsers(dest="command", parser_class=OneLineParser)
    group, group_sub = add_command_group(sub, "grp", help="a group", description="A group.", dest="grp_command")
    leaf = group_sub.add_parser("leaf")
    leaf.add_argument("--n", type=positive_int)
    leaf.set_defaults(func=lambda a: a.n)
    args = parser.parse_args(["grp"])
    assert args.func(args) == EXIT_USAGE and "A group." in capsys.readouterr().out  # help printed
    args = parser.parse_args(["grp", "leaf", "--n", "4"])
    assert args.func(args) == 4
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["grp", "leaf", "--n", "0"])
    err = capsys.readouterr().err
    assert info.value.code == EXIT_USAGE and len(err.strip().splitlines()) == 1 and "(see --help)" in err


def test_positive_types():
    assert positive_int("3") == 3 and positive_float("2.5") == 2.5
    for bad in ("0", "-1", "x", "nan", "inf"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_float(bad)
    for bad in ("0", "1.5", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_int(bad)
