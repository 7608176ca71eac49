"""`labelwise repo list|show|verify` and `labelwise promote` as functions over a ModelRepository."""

from __future__ import annotations

from dataclasses import dataclass

from model_repository import Manifest, ManifestError, ModelRepository, RepositoryError, check_alias_name
from model_repository.layout import ALIASES_DIR
from model_repository.repository import serving_problem

UNREADABLE = "unreadable"


@dataclass(frozen=True)
class ScenarioRow:
    """One scenario of the repository: its published versions and its aliases (the version each names,
    or "unreadable" for an alias file that cannot be read: `labelwise promote` rewrites one that is not
    valid JSON and names one that is a folder, to be moved away first); `unpublished`:
    the aliases that name a version not published here (a replica serving them refuses the scenario);
    `problem`: why its aliases cannot be listed at all (its `_aliases` is a file), else None."""

    scenario: str
    versions: list[int]
    aliases: dict[str, int | str]
    unpublished: list[str]
    problem: str | None = None


def list_scenarios(repo: ModelRepository) -> list[ScenarioRow]:
    """Every scenario with its versions and aliases; an unreadable alias file is shown, not raised."""
    rows = []
    for name in repo.list_scenarios():
        try:
            read = repo.read_aliases(name)
        except ManifestError as exc:  # its _aliases is a file: the scenario is listed, saying so
            read, problem = {}, str(exc)
        else:
            problem = None
        aliases = {
            alias: UNREADABLE if isinstance(version, Exception) else version
            for alias, version in read.items()
        }
        versions = repo.list_versions(name)
        unpublished = [a for a, v in aliases.items() if isinstance(v, int) and v not in versions]
        rows.append(ScenarioRow(name, versions, aliases, unpublished, problem))
    return rows


class MovedVersionError(ManifestError):
    """A version folder whose manifest.json names another scenario or version (a copied or renamed
    folder): `manifest` is what the folder holds, for `repo show` to print beside the error."""

    def __init__(self, message: str, manifest: Manifest) -> None:
        super().__init__(message)
        self.manifest = manifest


def show_version(repo: ModelRepository, scenario: str, ref: str = "latest") -> Manifest:
    """The manifest of a version named by number, alias or 'latest'; RepositoryError when absent.
    MovedVersionError when the folder's manifest names another scenario or version, as verify refuses it."""
    version = repo.resolve(scenario, ref)
    manifest = repo.load_manifest(scenario, version)
    if manifest.scenario != scenario or manifest.version != version:
        raise MovedVersionError(
            f"{scenario} v{version}: manifest says {manifest.scenario} v{manifest.version}; the folder was "
            "copied or moved, and `repo verify`, `promote` and serving refuse it",
            manifest,
        )
    return manifest


def verify_version(repo: ModelRepository, scenario: str, ref: str = "latest") -> Manifest:
    """Re-hash every file of a version; IntegrityError (or another RepositoryError) when it fails."""
    return repo.verify(scenario, repo.resolve(scenario, ref))


def check_reserved_aliases(repo: ModelRepository, scenario: str) -> None:
    """ManifestError naming the scenario's alias files called all digits or 'latest' (written before such
    names were refused): never listed or resolved, since the name means that version or the newest, so
    the alias an operator meant by one is not served; says how to rename it and to remove the file."""
    names = repo.reserved_alias_files(scenario)
    if not names:
        return
    found = []
    for name in names:
        try:
            found.append(f"{scenario}/{ALIASES_DIR}/{name}.json (v{repo.alias_version(scenario, name)})")
        except ManifestError:
            found.append(f"{scenario}/{ALIASES_DIR}/{name}.json ({UNREADABLE})")
    raise ManifestError(
        f"{repo.root}: alias files named like a version or 'latest' are ignored (the name means that "
        f"version, or the newest): {', '.join(found)}; to keep one, give its version a name with a letter "
        f"(`labelwise promote -s {scenario} -v N -a NAME`), then remove the file"
    )


def promote(
    repo: ModelRepository, scenario: str, version: int, alias: str = "production"
) -> int | str | None:
    """Point alias at version (verified first); return the version it pointed at before: None for a new
    alias, UNREADABLE for an alias file that could not be read (it is overwritten). Only this alias is
    read. Alias writes of one scenario on a local repository run one at a time
    (`ModelRepository.alias_lock`).

    A version no replica can load (torch weights only: `--export none`), or no CPU replica (fp16 graphs
    only), is refused, RepositoryError naming it: every replica polling the alias would refuse it, and new
    replicas would start without it.
    """
    check_alias_name(alias)
    problem = serving_problem(repo.load_manifest(scenario, version))
    if problem is not None:
        raise RepositoryError(f"not pointing {scenario} {alias} at v{version}: {problem}")
    with repo.alias_lock(scenario):
        try:
            before: int | str | None = repo.alias_version(scenario, alias)
        except ManifestError:
            before = UNREADABLE
        repo.set_alias(scenario, alias, version)
    return before
