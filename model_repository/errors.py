"""The root of every labelwise error, and every error the model repository raises.

`LabelwiseError` lives here because model_repository is the one package every other imports; each
package subclasses it once (RepositoryError, ServingError, TrainingError, LoadTestError) and the CLI
turns any of them into one line on stderr and exit code `exit_code` (1 runtime, 2 usage/bad input).
Each message names the thing that is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, get_args, get_origin

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationInfo

EXIT_RUNTIME = 1  # the command ran and failed (a server did not come up, an export broke parity)
EXIT_USAGE = 2  # the command was asked something wrong (bad option, missing file, invalid name)


class LabelwiseError(Exception):
    """Base class of every error labelwise raises on purpose; `exit_code` is what the CLI exits with."""

    exit_code = EXIT_RUNTIME


class UsageError(LabelwiseError, ValueError):
    """A command-line option or argument is wrong; raised by the CLI before any work starts."""

    exit_code = EXIT_USAGE


class RepositoryError(LabelwiseError):
    """Base class for model repository errors."""


class InvalidNameError(RepositoryError, ValueError):
    """A scenario, alias or base key that is not a safe, lowercase name."""

    exit_code = EXIT_USAGE


class ScenarioNotFoundError(RepositoryError, LookupError):
    """The scenario has no published version."""


class VersionNotFoundError(RepositoryError, LookupError):
    """The scenario exists but the version does not."""


class AliasNotFoundError(RepositoryError, LookupError):
    """No such alias for the scenario."""


class ManifestError(RepositoryError):
    """manifest.json is missing, not JSON, or does not match the schema."""


class SchemaVersionError(ManifestError):
    """manifest.json was written by an incompatible schema version."""


class IntegrityError(RepositoryError):
    """A file listed in the manifest is missing, has the wrong size, or the wrong sha256."""


class UnsafePathError(IntegrityError):
    """A manifest or base.json names a path that leaves its folder (`..`, absolute, a symlink out),
    a graph or head no checksum covers, or a file the folder holds that the manifest does not list."""


class AdapterMismatchError(RepositoryError, ValueError):
    """An adapter or head does not fit a multi-adapter graph (rank, targets, base, layers or head shape)."""


class ObjectStoreError(RepositoryError):
    """The repository's object store refused or failed: no credentials, no bucket, no endpoint, a bad URL."""


class RepositoryURLError(ObjectStoreError):
    """A repository URL that names no store this code can open: no bucket, a bucket that does not exist,
    an unknown scheme, or a scheme whose filesystem needs more than a URL (ftp://, github://) or a package
    it lacks."""

    exit_code = EXIT_USAGE


class MissingStoragePackageError(ObjectStoreError):
    """A repository URL whose scheme needs a package that is not installed (gs:// without gcsfs)."""

    exit_code = EXIT_USAGE


def validation_problems(
    exc: Any, *, name: Callable[[tuple[Any, ...]], str] | None = None, limit: int | None = None
) -> str:
    """A pydantic ValidationError as one line for an error message: `where: message` per error, joined
    by '; '. name: how a location reads (a CLI flag, say; default its parts joined by '.'); limit: at
    most that many errors."""
    parts = []
    for error in exc.errors()[:limit]:
        loc = tuple(error.get("loc") or ())
        where = name(loc) if name is not None else ".".join(map(str, loc))
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts) or str(exc).splitlines()[0]


def _takes_a_number_not_a_boolean(annotation: Any) -> bool:
    """Whether a field's type holds int or float (alone, optional or beside a Literal) and not bool."""
    kinds = set(get_args(annotation)) or {annotation}
    return bool(kinds & {int, float}) and bool not in kinds


def no_boolean_for_a_number(model: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """The value, unless it is YAML's true/false where a number goes (or in a list of numbers): refused
    naming the field, as pydantic takes a bool for an int or a float (bool is an int), so `num_replicas:
    true` served one replica. For a model's field_validator("*", mode="before")."""
    name = info.field_name or ""
    field = model.model_fields.get(name)
    if field is None:
        return value
    if isinstance(value, bool) and _takes_a_number_not_a_boolean(field.annotation):
        raise ValueError(f"{name} {str(value).lower()}: a boolean where a number goes; give a number")
    lists = [kind for kind in (*get_args(field.annotation), field.annotation) if get_origin(kind) is list]
    if isinstance(value, list) and any(_takes_a_number_not_a_boolean(get_args(kind)[0]) for kind in lists):
        for i, item in enumerate(value):
            if isinstance(item, bool):
                raise ValueError(
                    f"{name}[{i}] {str(item).lower()}: a boolean where a number goes; give a number"
                )
    return value
