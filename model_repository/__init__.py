"""The artifact contract between training (writes) and serving (reads).

Everything a version folder holds is defined here once: its layout (`layout`), its manifest
(`manifest`), the numpy head (`heads`), the base encoder's identity (`identity`) and the stacked
adapter tables of the multi-adapter graph (`multi_adapter`). It also holds `LabelwiseError`, the root
of every error the project raises on purpose, and `passes`: how serving cuts a batch into forward passes,
which export and evaluation share (int8 logits depend on the pass).
"""

from . import layout
from .errors import (
    EXIT_RUNTIME,
    EXIT_USAGE,
    AdapterMismatchError,
    AliasNotFoundError,
    IntegrityError,
    InvalidNameError,
    LabelwiseError,
    ManifestError,
    MissingStoragePackageError,
    ObjectStoreError,
    RepositoryError,
    ScenarioNotFoundError,
    SchemaVersionError,
    UnsafePathError,
    UsageError,
    VersionNotFoundError,
)
from .heads import FEATURES_OF_KIND, FIRST_TOKEN_MLP, HEAD_ARRAYS, ROBERTA_TYPES, NumpyHead, apply_head
from .identity import base_key, file_sha256, weights_hash
from .manifest import (
    PRECISIONS,
    SCHEMA_VERSION,
    BaseEncoderRef,
    BaseModelRef,
    ExportRecord,
    FileEntry,
    HeadSpec,
    Manifest,
    Parity,
)
from .multi_adapter import (
    ADAPTER_INDEX_INPUT,
    NUM_LABELS_INPUT,
    AdapterEntry,
    GraphSpec,
    build_tables,
    check_adapter,
    table_bytes,
)
from .object_repository import ObjectStoreRepository
from .repository import (
    BaseDraft,
    ModelRepository,
    VersionDraft,
    check_alias_name,
    code_revision,
    default_root,
    missing_local_root,
    parse_manifest,
    read_manifest,
    validate_name,
)
from .storage import ObjectStore, is_object_store, parse_root

__all__ = [
    "ADAPTER_INDEX_INPUT",
    "EXIT_RUNTIME",
    "EXIT_USAGE",
    "FEATURES_OF_KIND",
    "FIRST_TOKEN_MLP",
    "HEAD_ARRAYS",
    "NUM_LABELS_INPUT",
    "PRECISIONS",
    "ROBERTA_TYPES",
    "SCHEMA_VERSION",
    "AdapterEntry",
    "AdapterMismatchError",
    "AliasNotFoundError",
    "BaseDraft",
    "BaseEncoderRef",
    "BaseModelRef",
    "ExportRecord",
    "FileEntry",
    "GraphSpec",
    "HeadSpec",
    "IntegrityError",
    "InvalidNameError",
    "LabelwiseError",
    "Manifest",
    "ManifestError",
    "MissingStoragePackageError",
    "ModelRepository",
    "NumpyHead",
    "ObjectStore",
    "ObjectStoreError",
    "ObjectStoreRepository",
    "Parity",
    "RepositoryError",
    "ScenarioNotFoundError",
    "SchemaVersionError",
    "UnsafePathError",
    "UsageError",
    "VersionDraft",
    "VersionNotFoundError",
    "apply_head",
    "base_key",
    "build_tables",
    "check_adapter",
    "check_alias_name",
    "code_revision",
    "default_root",
    "file_sha256",
    "is_object_store",
    "layout",
    "missing_local_root",
    "parse_manifest",
    "parse_root",
    "read_manifest",
    "table_bytes",
    "validate_name",
    "weights_hash",
]
