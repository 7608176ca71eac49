"""Every error the model repository raises; each message names the thing that is wrong."""

from __future__ import annotations


class RepositoryError(Exception):
    """Base class for model repository errors."""


class InvalidNameError(RepositoryError, ValueError):
    """A scenario, alias or base key that is not a safe, lowercase name."""


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


class AdapterMismatchError(RepositoryError, ValueError):
    """An adapter or head does not fit a multi-adapter graph (rank, targets, base, layers or head shape)."""
