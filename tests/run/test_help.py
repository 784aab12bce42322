"""Help from the declaration: every parameter field carries its help text as metadata, and every
flag and positional of every ``fedhh`` command says what it means, not only its default."""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Iterator

import pytest

from fedhh.cli import build_parser
from fedhh.core.declare import HELP, help_of
from fedhh.mechanisms.params import MechanismParams
from fedhh.run import settings
from fedhh.server.flower_app import FlowerRun

DECLARED = (MechanismParams, settings.DatasetParams, FlowerRun)
# what a help text may hold that says nothing of the parameter's meaning
DEFAULT_ONLY = re.compile(r"\(default:?[^)]*\)|%\(default\)s|default:?\s*\S*")


def _meaningful(text: str | None) -> bool:
    """The help text says something beyond its default (two words at least)."""
    rest = DEFAULT_ONLY.sub(" ", text or "")
    return len(re.findall(r"[^\W\d_]{2,}", rest)) >= 2


def _parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ("fedhh",)
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """``parser`` and every sub-command's parser under it, with its command path."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def _actions() -> list[tuple[str, argparse.Action]]:
    out = []
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                out += [(" ".join(path), sub) for sub in action._choices_actions]
            elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                out.append((" ".join(path), action))
    return out


def _name(action: argparse.Action) -> str:
    return "/".join(action.option_strings) or action.dest or str(action.metavar)


def test_the_walk_sees_every_command() -> None:
    commands = {" ".join(path) for path, _ in _parsers(build_parser())}
    for want in (
        "fedhh simulate",
        "fedhh coordinator serve",
        "fedhh coordinator add-token",
        "fedhh party serve",
        "fedhh party enroll",
        "fedhh query start",
        "fedhh query freq",
        "fedhh deploy local",
        "fedhh flower run",
    ):
        assert want in commands


def test_every_flag_and_positional_says_what_it_means() -> None:
    bare = [
        f"{path} {_name(action)}: {action.help!r}"
        for path, action in _actions()
        if action.help != argparse.SUPPRESS and not _meaningful(action.help)
    ]
    assert bare == [], "give these a help text that says what they mean:\n" + "\n".join(bare)


@pytest.mark.parametrize("path", sorted({p for p, _ in _actions()}))
def test_help_renders(path: str) -> None:
    """Every command's --help formats (a stray % in a help text would break it)."""
    parsers = dict((" ".join(p), parser) for p, parser in _parsers(build_parser()))
    assert parsers[path].format_help()


@pytest.mark.parametrize("cls", DECLARED, ids=lambda c: c.__name__)
def test_every_field_declares_its_help(cls: type) -> None:
    missing = [f.name for f in dataclasses.fields(cls) if not _meaningful(help_of(f))]
    assert missing == [], f"declare with fedhh.core.declare.param(default, help): {missing}"
    for f in dataclasses.fields(cls):
        assert isinstance(f.metadata[HELP], str) and "%" not in f.metadata[HELP], f.name


def test_flags_take_the_declared_help() -> None:
    parser = build_parser()
    (simulate,) = (p for path, p in _parsers(parser) if path == ("fedhh", "simulate"))
    flags = {a.dest: a for a in simulate._actions}
    for cls in (MechanismParams, settings.DatasetParams):
        for f in dataclasses.fields(cls):
            if f.name in settings.DERIVED:
                assert f.name not in flags
                continue
            assert flags[f.name].help is not None
            assert flags[f.name].help.startswith(help_of(f)), f.name
