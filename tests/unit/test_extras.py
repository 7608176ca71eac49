"""Each optional module's install hint names an extra of pyproject.toml that really installs it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from labelwise.extras import _EXTRA_OF, MissingExtraError, require

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text("utf-8"))
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
# import name -> distribution name, where they differ
DISTRIBUTION = {"sklearn": "scikit-learn", "prometheus_client": "prometheus-client"}


def _installs(extra: str) -> set[str]:
    """Distribution names an extra brings, following `labelwise[other]` references."""
    names: set[str] = set()
    for requirement in EXTRAS[extra]:
        name = re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0).lower()  # type: ignore[union-attr]
        if name == "labelwise":
            for other in re.search(r"\[(.*)\]", requirement).group(1).split(","):  # type: ignore[union-attr]
                names |= _installs(other.strip())
        else:
            names.add(name)
    return names


@pytest.mark.parametrize("module, extra", sorted(_EXTRA_OF.items()))
def test_the_named_extra_installs_the_module(module: str, extra: str) -> None:
    assert extra in EXTRAS, f"{module}: no extra {extra!r} in pyproject.toml"
    installed = _installs(extra)
    assert DISTRIBUTION.get(module, module) in installed, f"labelwise[{extra}] does not install {module}"


def test_parquet_without_pyarrow_names_an_extra_with_pyarrow(monkeypatch: pytest.MonkeyPatch) -> None:
    """It named labelwise[dev], which does not bring pyarrow."""
    monkeypatch.setitem(__import__("sys").modules, "pyarrow", None)  # import fails as when not installed
    with pytest.raises(MissingExtraError, match=re.escape("pip install 'labelwise[parquet]'")):
        require("pyarrow")
