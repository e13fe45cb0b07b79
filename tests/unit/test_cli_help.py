"""``python -m app --help`` names the product's commands first and says which of Faust's own
are safe."""

import re

import app.evaluation.commands  # noqa: F401 - declares evaluate and streaming-eval
from app.cli import COMMANDS, ROOT_HELP


def test_the_help_lists_exactly_the_products_commands():
    declared = {handler.__name__.replace("_", "-") for handler, _ in COMMANDS} | {"worker"}
    listed = set(re.findall(r"^  ([a-z-]+)  ", ROOT_HELP, re.MULTILINE))

    assert listed == declared


def test_the_help_says_which_of_fausts_commands_are_safe_and_which_are_not():
    safe, unsafe = ROOT_HELP.split("not for this product:")

    assert all(name in safe for name in ("agents", "tables", "models"))
    assert all(name in unsafe for name in ("send", "reset"))
