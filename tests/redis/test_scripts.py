"""The Lua scripts: shipped as files of the package, and each script's ``KEYS`` and ``ARGV``
in the order of its typed tuples (see saga_redis._lua)."""

from __future__ import annotations

import hashlib
import re
from importlib.resources import files
from typing import Any, NamedTuple

import pytest

from saga_redis._lua import LUA_FOLDER, PRELUDE, Script, script_source
from saga_redis._scripts import (
    ALL_SCRIPTS,
    CHECKPOINT,
    CLAIM,
    CheckpointArgs,
    CheckpointKeys,
    ClaimArgs,
)

_KEY = re.compile(r"^local (\w+) = KEYS\[(\d+)\]", re.MULTILINE)
_ARG = re.compile(r"^local (\w+) = ARGV\[(\d+)\]", re.MULTILINE)
# A trailing argument list: ``local <field>_at = <n>`` names where ARGV[n..] starts.
_SPREAD = re.compile(r"^local (\w+)_at = (\d+)\b", re.MULTILINE)


class Declared(NamedTuple):
    """What a script's file says it reads, in order."""

    keys: tuple[str, ...]
    args: tuple[str, ...]


def _in_order(found: list[tuple[str, str]], what: str) -> tuple[str, ...]:
    by_index = {int(index): name for name, index in found}
    assert len(by_index) == len(found), f"{what}: an index is read twice"
    assert sorted(by_index) == list(range(1, len(found) + 1)), f"{what}: indexes with gaps"
    return tuple(by_index[index] for index in sorted(by_index))


def declared(text: str) -> Declared:
    """The names a script gives ``KEYS[1..]`` and ``ARGV[1..]`` (with a trailing list last)."""
    keys = _in_order(_KEY.findall(text), "KEYS")
    args = list(_ARG.findall(text))
    spread = _SPREAD.findall(text)
    assert len(spread) <= 1, "more than one trailing argument list"
    args += spread
    return Declared(keys, _in_order(args, "ARGV"))


def _script_text(script: Script[Any, Any]) -> str:
    return files("saga_redis").joinpath(LUA_FOLDER, f"{script.name}.lua").read_text("utf-8")


def test_every_script_and_the_prelude_are_found_through_importlib_resources() -> None:
    folder = files("saga_redis").joinpath(LUA_FOLDER)
    shipped = {entry.name for entry in folder.iterdir() if entry.name.endswith(".lua")}
    assert shipped == {PRELUDE} | {f"{script.name}.lua" for script in ALL_SCRIPTS}
    for name in shipped:
        assert folder.joinpath(name).read_text("utf-8").strip()


@pytest.mark.parametrize("script", ALL_SCRIPTS, ids=lambda script: script.name)
def test_each_scripts_typed_tuples_name_its_keys_and_arguments_in_order(
    script: Script[Any, Any],
) -> None:
    text = _script_text(script)
    assert declared(text) == Declared(script.keys._fields, script.args._fields)
    assert script.spread_last == bool(_SPREAD.search(text))


@pytest.mark.parametrize("script", ALL_SCRIPTS, ids=lambda script: script.name)
def test_each_script_reads_its_keys_and_arguments_only_through_its_named_locals(
    script: Script[Any, Any],
) -> None:
    # An ARGV[3] in the middle of a script would be an argument no tuple names.
    text = _script_text(script)
    named = len(_KEY.findall(text)) + len(_ARG.findall(text))
    assert len(re.findall(r"\b(?:KEYS|ARGV)\[\d+\]", text)) == named


def test_the_order_check_fails_when_two_arguments_change_places() -> None:
    text = _script_text(CHECKPOINT)
    swapped = text.replace("local owner = ARGV[4]", "local owner = ARGV[@]")
    swapped = swapped.replace("local lease_us = ARGV[5]", "local lease_us = ARGV[4]")
    swapped = swapped.replace("local owner = ARGV[@]", "local owner = ARGV[5]")
    assert swapped != text
    assert declared(swapped).args != CheckpointArgs._fields
    assert declared(text).keys == CheckpointKeys._fields


def test_a_script_runs_after_the_prelude_which_reads_no_keys_or_arguments_of_its_own() -> None:
    prelude = files("saga_redis").joinpath(LUA_FOLDER, PRELUDE).read_text("utf-8")
    assert not re.search(r"\b(?:KEYS|ARGV)\[\d+\]", prelude)
    for script in ALL_SCRIPTS:
        assert script.source == script_source(script.name) == prelude + _script_text(script)
        assert script.sha == hashlib.sha1(script.source.encode()).hexdigest()


def test_a_trailing_argument_list_is_spread_after_the_fixed_arguments() -> None:
    fixed = ("id", "", "", "", "0", "1", "running", "body", "t", "0", "", "", "", "", "")
    assert CHECKPOINT.argv(CheckpointArgs(*fixed, entries=["e1", "e2"])) == (*fixed, "e1", "e2")
    assert CHECKPOINT.argv(CheckpointArgs(*fixed, entries=())) == fixed
    claim = ("id", "o", "1", "t", "1", "2", "0")
    assert CLAIM.argv(ClaimArgs(*claim)) == claim
