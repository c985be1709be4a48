"""Every default is said once: where a config section, a ``rankclip`` sub-command and a library function
take the same setting, their defaults agree (config/schema.yaml is the reference the workflow uses)."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

import pytest
import yaml

from rankclip.cli import build_parser
from rankclip.corpus.captions import caption_shards
from rankclip.corpus.web import shards_from_url_list
from rankclip.demo_data.emoji import make_emoji_corpus
from rankclip.demo_data.fashion_mnist import make_fashion_mnist
from rankclip.demo_data.shapes import make_demo

SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "schema.yaml").read_text())

# (schema path under `properties`, `rankclip` sub-command, library function)
SAME_SETTINGS = [
    (("data", "demo"), ("data", "make-demo"), make_demo),
    (("data", "emoji"), ("data", "make-emoji"), make_emoji_corpus),
    (("data", "fashion_mnist"), ("data", "make-fashion-mnist"), make_fashion_mnist),
    (("data", "web"), ("data", "web"), shards_from_url_list),
    (("data", "web", "captions"), ("data", "captions"), caption_shards),
]


def schema_defaults(path: tuple[str, ...]) -> dict:
    node = SCHEMA
    for name in path:
        node = node["properties"][name]
    return {name: spec["default"] for name, spec in node["properties"].items() if "default" in spec}


def cli_defaults(command: tuple[str, ...]) -> dict:
    parser = build_parser()
    for name in command:
        (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = sub.choices[name]
    return {a.dest: a.default for a in parser._actions if a.default is not argparse.SUPPRESS}


def function_defaults(function) -> dict:
    parameters = inspect.signature(function).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def disagreements(config: dict, cli: dict, library: dict) -> tuple[int, list[str]]:
    """How many settings two or more places give a default, and those whose defaults differ. A CLI default
    of None defers to the library's (the command passes nothing); ``source: none`` is the workflow's own."""
    compared, differ = 0, []
    for name in sorted(set(config) | set(cli)):
        places = {"schema": config, "cli": cli, "library": library}
        values = {where: found[name] for where, found in places.items() if name in found}
        if values.get("cli", 0) is None and values.get("library") is not None:
            values.pop("cli")
        if name == "source" or len(values) < 2:
            continue
        compared += 1
        if len({repr(v) for v in values.values()}) > 1:
            differ.append(f"{name}: {values}")
    return compared, differ


@pytest.mark.parametrize(
    ("schema", "command", "function"), SAME_SETTINGS, ids=lambda x: getattr(x, "__name__", x)
)
def test_config_cli_and_library_defaults_agree(schema, command, function):
    compared, differ = disagreements(
        schema_defaults(schema), cli_defaults(command), function_defaults(function)
    )
    assert compared, f"nothing compared for {command}"
    assert not differ, f"{'.'.join(schema)}: {differ}"


def test_the_check_sees_a_disagreement():
    assert cli_defaults(("data", "make-demo"))["num_train"] == 8192
    assert disagreements({"batch_size": 64}, {"batch_size": 32}, {}) == (
        1,
        ["batch_size: {'schema': 64, 'cli': 32}"],
    )
    assert disagreements({"model": "m"}, {"model": None}, {"model": "m"}) == (1, [])  # None: the library's
    assert disagreements({"seed": 0}, {}, {}) == (0, [])
