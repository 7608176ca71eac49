"""`labelwise repo list|show|verify` and `labelwise promote` as functions over a ModelRepository."""

from __future__ import annotations

from dataclasses import dataclass

from model_repository import Manifest, ModelRepository


@dataclass(frozen=True)
class ScenarioRow:
    """One scenario of the repository: its published versions and its aliases."""

    scenario: str
    versions: list[int]
    aliases: dict[str, int]


def list_scenarios(repo: ModelRepository) -> list[ScenarioRow]:
    """Every scenario with its versions and aliases."""
    return [
        ScenarioRow(name, repo.list_versions(name), dict(repo.aliases(name)))
        for name in repo.list_scenarios()
    ]


def show_version(repo: ModelRepository, scenario: str, ref: str = "latest") -> Manifest:
    """The manifest of a version named by number, alias or 'latest'; RepositoryError when absent."""
    return repo.load_manifest(scenario, repo.resolve(scenario, ref))


def verify_version(repo: ModelRepository, scenario: str, ref: str = "latest") -> Manifest:
    """Re-hash every file of a version; IntegrityError (or another RepositoryError) when it fails."""
    return repo.verify(scenario, repo.resolve(scenario, ref))


def promote(repo: ModelRepository, scenario: str, version: int, alias: str = "production") -> int | None:
    """Point alias at version (verified first); return the version it pointed at before, if any."""
    before = repo.aliases(scenario).get(alias)
    repo.set_alias(scenario, alias, version)
    return before
