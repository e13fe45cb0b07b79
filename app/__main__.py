"""``python -m app worker`` and the other commands: the Faust command line of a worker wired
from the ``RECSYS_`` environment, with this project's commands added."""

import app.evaluation.commands  # noqa: F401 - declares evaluate and streaming-eval
from app import cli
from app.factory import create_app
from app.settings import Settings, SettingsError


def main() -> None:
    try:
        product = create_app(Settings.from_env())
    except SettingsError as error:
        raise SystemExit(f"configuration: {error}") from None
    cli.add_commands(product)
    product.faust.main()


if __name__ == "__main__":
    main()
