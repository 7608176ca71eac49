"""The `labelwise` command. Each area registers its subcommands from its own module."""

from __future__ import annotations

import typer

from . import _cli_bench, _cli_export, _cli_repo, _cli_serving, _cli_training, _cli_tune

app = typer.Typer(
    name="labelwise",
    help="Train, export, publish and serve text classifiers for many scenarios on one encoder.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
for _module in (_cli_repo, _cli_training, _cli_tune, _cli_export, _cli_serving, _cli_bench):
    _module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
