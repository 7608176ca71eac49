"""A versioned, checksummed, write-once folder of scenario models.

Layout::

    <root>/<scenario>/<version>/manifest.json   written once, never modified
    <root>/<scenario>/_aliases/<alias>.json      {"version": N}, switched by write-then-rename
    <root>/_bases/<key>/<precision>/             shared base encoders, written once

Every path a manifest or base.json names resolves inside its folder and carries a checksum; publish,
set_alias, verify and verify_base refuse anything else (UnsafePathError).

The root may also be an object-store URL (`s3://bucket/prefix`): `ModelRepository(url)` is then an
`ObjectStoreRepository` (object_repository.py) with the same layout and guarantees.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import (
    AliasNotFoundError,
    IntegrityError,
    InvalidNameError,
    ManifestError,
    RepositoryError,
    ScenarioNotFoundError,
    SchemaVersionError,
    UnsafePathError,
    VersionNotFoundError,
    validation_problems,
)
from .identity import file_sha256
from .layout import (
    ALIASES_DIR,
    BASE_INFO_FILE,
    BASES_DIR,
    LORA_FILE,
    MANIFEST_FILE,
    NAME_PATTERN,
    graph_file,
    is_contained,
    is_multi_adapter_folder,
    is_number,
    is_version_name,
)
from .manifest import PRECISIONS, SCHEMA_VERSION, FileEntry, Manifest
from .storage import is_object_store, parse_root

log = logging.getLogger(__name__)

DEFAULT_ROOT = "./var/model-repository"
_NAME = re.compile(NAME_PATTERN)
_TMP_PREFIX = ".tmp-"
# A draft folder (draft_folder, the object-store cache's downloads) or a broken base set aside by new_base:
# what an interrupted publish (kill -9, a lost node) leaves under a scenario or under _bases/<key>/.
_DRAFT = re.compile(rf"{re.escape(_TMP_PREFIX)}(?:broken-)?[0-9a-f]{{32}}(?:-.+)?")
# A draft untouched this long is left over: no publish takes a day, and a younger one may be another
# machine's publish still running on a shared repository.
STALE_DRAFT_S = 24 * 3600.0


# The highest version number a local scenario folder ever gave (a deleted version's is never given again).
LAST_NUMBER_FILE = ".last-version"


def default_root() -> str | Path:
    """The root from LABELWISE_REPOSITORY (a path or an object-store URL), else ./var/model-repository."""
    return parse_root(os.environ.get("LABELWISE_REPOSITORY", DEFAULT_ROOT))


def missing_local_root(root: str | os.PathLike[str] | None = None) -> Path | None:
    """The path a local root (None: default_root()) names when nothing is there; None when something is,
    or when the root is an object store (opening it checks that)."""
    parsed = parse_root(root) if root is not None else default_root()
    if isinstance(parsed, Path) and not parsed.exists():
        return parsed
    return None


def unwritable_local_root(root: str | os.PathLike[str] | None = None) -> str | None:
    """Why a new version cannot be written under a local root (None: default_root()), checked before hours
    of training are spent on one: the first folder on its path that exists is a file, or one this process
    may not write in. None when it can, and for an object store (opening it checks that)."""
    parsed = parse_root(root) if root is not None else default_root()
    if not isinstance(parsed, Path):
        return None
    there = Path(os.path.abspath(parsed))
    while not there.exists() and there.parent != there:  # where the first missing folder would be made
        there = there.parent
    if not there.is_dir():
        return f"{there} is a file, not a folder"
    if not os.access(there, os.W_OK | os.X_OK):
        return f"{there} is not writable by this user"
    return None


def validate_name(name: str, what: str = "scenario") -> str:
    """Return name if it is a safe lowercase name, else raise InvalidNameError naming it."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidNameError(
            f"invalid {what} name {name!r}: use 1-64 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit (no '/', '..' or spaces)"
        )
    return name


def code_revision() -> str:
    """The git commit of the code that made an artifact, or 'unknown' outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _files_in(folder: Path) -> list[str]:
    """Every file under folder, relative and in posix form (symlinked folders are not descended)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _hash_files(folder: Path, skip: set[str]) -> dict[str, FileEntry]:
    entries: dict[str, FileEntry] = {}
    for rel in _files_in(folder):
        if rel in skip:
            continue
        path = folder / rel
        entries[rel] = FileEntry(sha256=file_sha256(path), size_bytes=path.stat().st_size)
    return entries


def draft_folder(parent: Path) -> Path:
    """A new, empty temp folder for a draft version or base under parent (made if needed); drafts that
    interrupted publishes left under parent more than STALE_DRAFT_S ago are removed first."""
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_drafts(parent)
    tmp = parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
    tmp.mkdir()
    return tmp


@dataclass(frozen=True)
class LeftoverDraft:
    """A draft folder no publish finished: its size and how long since anything in it last changed."""

    path: Path
    size_bytes: int
    age_s: float


def _leftover(folder: Path, now: float) -> LeftoverDraft:
    """The draft's size and age; its age is its newest entry's (a publish writes deep inside it)."""
    size, newest = 0, 0.0
    for dirpath, dirs, files in os.walk(folder):
        for name in [".", *dirs, *files]:
            with contextlib.suppress(OSError):  # removed meanwhile
                st = os.lstat(os.path.join(dirpath, name))
                newest = max(newest, st.st_mtime)
                if name in files:
                    size += st.st_size
    return LeftoverDraft(folder, size, max(0.0, now - newest) if newest else 0.0)


def drafts_in(parent: Path) -> list[LeftoverDraft]:
    """Draft folders directly under parent (a scenario folder or `_bases/<key>/`), oldest first."""
    if not parent.is_dir():
        return []
    now = time.time()
    found = [_leftover(p, now) for p in parent.iterdir() if _DRAFT.fullmatch(p.name) and p.is_dir()]
    return sorted(found, key=lambda d: -d.age_s)


def find_drafts(root: Path) -> list[LeftoverDraft]:
    """Every draft folder of a local repository root (or an object-store repository's cache): under each
    scenario folder and under each `_bases/<key>/`."""
    root = Path(root)
    if not root.is_dir():
        return []
    parents = [p for p in sorted(root.iterdir()) if _NAME.fullmatch(p.name) and p.is_dir()]
    bases = root / BASES_DIR
    if bases.is_dir():
        parents += [p for p in sorted(bases.iterdir()) if _NAME.fullmatch(p.name) and p.is_dir()]
    return [draft for parent in parents for draft in drafts_in(parent)]


def remove_stale_drafts(parent: Path, older_than_s: float = STALE_DRAFT_S) -> list[LeftoverDraft]:
    """Remove the drafts under parent untouched for older_than_s (younger ones may be publishes still
    running elsewhere); each removal is logged. Returns what was removed."""
    removed = []
    for draft in drafts_in(parent):
        if draft.age_s < older_than_s:
            continue
        shutil.rmtree(draft.path, ignore_errors=True)
        if not draft.path.exists():
            log.warning(
                "removed %s, a draft an interrupted publish or download left %.1f hours ago (%d bytes)",
                draft.path,
                draft.age_s / 3600,
                draft.size_bytes,
            )
            removed.append(draft)
    return removed


# What a CPU replica loads (serving's precision_order: int8, then fp32); fp16 is a GPU graph, which GPU
# replicas run with fp32 as their fallback. training.export.precisions keeps its CPU_PRECISIONS equal.
CPU_PRECISIONS: tuple[str, ...] = ("fp32", "int8")


def serving_problem(manifest: Manifest) -> str | None:
    """Why a replica cannot load this version (None: every replica can), by the loader's rules: an ONNX
    graph of its own, or a frozen head on its base encoder, or (lora_mode shared) a LoRA adapter, head and
    base, in a precision a CPU replica loads (int8 or fp32; GPU replicas fall back to fp32 too). An alias on
    a version that fails this makes every replica that polls it refuse it."""
    own = {e.precision for e in manifest.exports} | {p for p in PRECISIONS if graph_file(p) in manifest.files}
    base, head = manifest.base_encoder, manifest.head
    base_precisions = set(base.precisions) if base is not None else set()
    if own & set(CPU_PRECISIONS):
        return None
    if manifest.strategy == "frozen" and head is not None and base_precisions & set(CPU_PRECISIONS):
        return None
    # lora_mode shared serves the precisions the version exported, or any when it records no export
    if (
        manifest.strategy == "lora"
        and head is not None
        and base is not None
        and LORA_FILE in manifest.files
        and not manifest.exports
    ):
        return None
    who = f"{manifest.scenario} v{manifest.version}"
    scenario, version = manifest.scenario, manifest.version
    # What it has then is GPU graphs only: its own, or a frozen head's base (LoRA reads no plain base).
    frozen_base = base_precisions if manifest.strategy == "frozen" and head is not None else set()
    gpu_only = sorted(own | frozen_base)
    if gpu_only:
        return (
            f"{who} cannot be served on CPU: it has only GPU graphs ({', '.join(gpu_only)}), and CPU "
            "replicas load int8 or fp32 (GPU replicas fall back to fp32 too); run `labelwise export "
            f"--scenario {scenario} --version {version} -p fp32,int8`, which publishes a new version "
            "holding them beside its fp16 graph, and promote that version"
        )
    return (
        f"{who} cannot be served: it has no ONNX export (published with torch weights only, e.g. "
        f"`--export none`); run `labelwise export --scenario {scenario} --version "
        f"{version}`, which publishes its graphs as a new version, and promote that version"
    )


def plain_base_folders(manifest: Manifest) -> list[str]:
    """The `_bases/<key>/` folders whose plain base encoder serving reads for this version, and so what
    verify checks with it: every folder its base_encoder names, except for a LoRA version, which runs its
    own merged graph or (lora_mode shared) the multi-adapter graph, verified where it is opened, and keeps
    loading while its plain base is missing or being rebuilt (docs/artifacts.md)."""
    if manifest.base_encoder is None or manifest.strategy == "lora":
        return []
    return manifest.base_encoder.graph_folders()


def check_base_identity(info: dict[str, Any], key: str, folder: str, what: str) -> None:
    """A base.json must name the folder it is read from, as a manifest names its version: a folder copied
    or restored from another base (another model's encoder) is refused, not served."""
    if info.get("key") != key or info.get("precision") != folder:
        raise ManifestError(
            f"{what}: {BASE_INFO_FILE} says base {info.get('key')!r} {info.get('precision')!r}, not "
            f"{key!r} {folder!r}; the folder was moved or restored from another base's: put back its own "
            "copy, or move it away and export a version on this base again to rebuild it"
        )


def draft_files(tmp: Path, what: str, own_file: str) -> dict[str, FileEntry]:
    """A finished draft's files, hashed, once checked to hold no `own_file` (the repository writes it:
    manifest.json or base.json) and no link that leaves the draft."""
    if (tmp / own_file).exists():
        raise ManifestError(f"{what}: a draft must not write {own_file} itself")
    _check_no_link_out(tmp, what)
    _check_relative_links(tmp, what)
    return _hash_files(tmp, skip=set())


def sealed_base(draft: BaseDraft) -> tuple[dict[str, FileEntry], bytes]:
    """A finished base draft's files (hashed and checked by draft_files) and its base.json."""
    what = f"base {draft.key} {draft.precision} (draft, nothing published)"
    files = draft_files(draft.path, what, BASE_INFO_FILE)
    payload = {
        "schema_version": SCHEMA_VERSION,
        "key": draft.key,
        "precision": draft.precision,
        "info": draft.info,
        "files": {k: v.model_dump() for k, v in files.items()},
    }
    return files, json.dumps(payload, indent=2, sort_keys=True).encode()


def _check_relative_links(folder: Path, what: str) -> None:
    """Refuse an absolute symlink in a draft: the draft folder is renamed when published, so a link to a
    path inside it would point into the folder that is gone (relative links move with it)."""
    for dirpath, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(dirpath, name)
            if path.is_symlink() and os.path.isabs(os.readlink(path)):
                rel = path.relative_to(folder).as_posix()
                raise UnsafePathError(
                    f"{what}: {rel!r} is an absolute symlink ({os.readlink(path)!r}); the draft folder moves "
                    "when it is published: link relatively, or copy the file"
                )


def parse_base_info(data: bytes, what: str) -> dict[str, Any]:
    """A base.json's object, or ManifestError saying what it is instead."""
    try:
        info = json.loads(data)
    except ValueError as exc:  # not JSON, not UTF-8, or a number of thousands of digits
        raise ManifestError(f"{what}: {BASE_INFO_FILE} is not JSON ({exc})") from exc
    if not isinstance(info, dict):
        raise ManifestError(f"{what}: {BASE_INFO_FILE} is not a JSON object but {type(info).__name__}")
    return info


def _check_no_link_out(folder: Path, what: str) -> None:
    """Refuse a symlink anywhere under folder that resolves outside it: its bytes could change unseen."""
    root = folder.resolve()
    for dirpath, dirs, files in os.walk(folder):  # does not follow symlinked folders
        for name in dirs + files:
            path = Path(dirpath, name)
            if path.is_symlink() and not Path(os.path.realpath(path)).is_relative_to(root):
                rel = path.relative_to(folder).as_posix()
                raise UnsafePathError(
                    f"{what}: {rel!r} is a symlink to {os.readlink(path)!r}, outside the folder {folder}"
                )


def _check_contained(folder: Path, named: list[tuple[str, str]], what: str) -> None:
    """Every named path must be relative, free of `..`, and still inside folder once symlinks resolve."""
    root = folder.resolve()
    for field_name, rel in named:
        if not is_contained(rel):
            raise UnsafePathError(
                f"{what}: {field_name} {rel!r} is not a relative path inside the folder {folder}"
            )
        try:
            resolved = (folder / rel).resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise UnsafePathError(f"{what}: {field_name} {rel!r} cannot be resolved: {exc}") from exc
        if not resolved.is_relative_to(root):
            raise UnsafePathError(
                f"{what}: {field_name} {rel!r} resolves to {resolved}, outside the folder {folder}"
            )


def _check_all_listed(folder: Path, files: dict[str, FileEntry], info_file: str, what: str) -> None:
    """Every file the folder holds must carry a checksum: serving opens some by fixed name."""
    unlisted = [rel for rel in _files_in(folder) if rel != info_file and rel not in files]
    if unlisted:
        raise UnsafePathError(
            f"{what}: {unlisted[0]!r} is in the folder but has no checksum in {info_file}"
            + (f" (and {len(unlisted) - 1} more)" if len(unlisted) > 1 else "")
        )


def _check_manifest_paths(folder: Path, manifest: Manifest, what: str) -> None:
    """The whole containment check of a version: paths, symlinks, and a checksum for each artifact."""
    _check_no_link_out(folder, what)
    _check_contained(folder, manifest.named_paths(), what)
    for field_name, rel in manifest.artifact_paths():
        if rel not in manifest.files:
            raise UnsafePathError(
                f"{what}: {field_name} {rel!r} has no checksum: it is not a key of the manifest's files"
            )
    _check_all_listed(folder, manifest.files, MANIFEST_FILE, what)


def _check_files(folder: Path, files: dict[str, FileEntry], listed_in: str, what: str) -> None:
    """Every listed file is there, at its size and sha256; errors name listed_in, the file holding the
    checksums (manifest.json of a version, base.json of a base folder)."""
    for rel, entry in files.items():
        path = folder / rel
        if not path.is_file():
            raise IntegrityError(f"{what}: file {rel!r} listed in {listed_in} is missing")
        size = path.stat().st_size
        if size != entry.size_bytes:
            raise IntegrityError(f"{what}: file {rel!r} is {size} bytes, {listed_in} says {entry.size_bytes}")
        if file_sha256(path) != entry.sha256:
            raise IntegrityError(f"{what}: file {rel!r} does not match its sha256 in {listed_in}")


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` (UTF-8) to `path` whole or not at all, as write_bytes_atomic does."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` whole or not at all: a temporary file in the same folder, flushed to disk,
    then renamed over `path` (an interrupted write leaves the previous file, never an empty or cut one)."""
    path = Path(path)
    tmp = path.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # a failed write (disk full) leaves no temp file behind
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
    return path


def _write_json_atomic(path: Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True))


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass
class VersionDraft:
    """A version being written: put files under `path` and manifest fields in `fields`."""

    scenario: str
    path: Path
    fields: dict[str, Any] = field(default_factory=dict)
    version: int | None = None
    manifest: Manifest | None = None


@dataclass
class BaseDraft:
    """A shared base encoder being written for one precision."""

    key: str
    precision: str
    path: Path
    info: dict[str, Any] = field(default_factory=dict)
    published: bool = False


class ModelRepository:
    """Publish, resolve, alias and verify scenario versions under one root folder.

    `ModelRepository("s3://bucket/prefix")` (or LABELWISE_REPOSITORY set to such a URL) gives an
    ObjectStoreRepository, so every caller works on either without a change.
    """

    root: Any

    def __new__(
        cls, root: str | os.PathLike[str] | None = None, *args: Any, **kwargs: Any
    ) -> ModelRepository:
        if cls is ModelRepository and is_object_store(root if root is not None else default_root()):
            from .object_repository import ObjectStoreRepository

            return super().__new__(ObjectStoreRepository)
        return super().__new__(cls)

    def __getnewargs__(self) -> tuple[Any, ...]:
        """Unpickling and copy call __new__ with these: with none it would read LABELWISE_REPOSITORY, and a
        local repository could come back as an object-store one."""
        return (self.root,)

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(parse_root(root)) if root is not None else Path(default_root())

    # ---- paths -------------------------------------------------------------------------
    def scenario_path(self, scenario: str) -> Path:
        return self.root / validate_name(scenario)

    def version_path(self, scenario: str, version: int) -> Path:
        return self.scenario_path(scenario) / str(int(version))

    def base_path(self, key: str, precision: str | None = None) -> Path:
        path = self.root / BASES_DIR / validate_name(key, "base key")
        return path / validate_name(precision, "precision") if precision else path

    # ---- listing and resolving ------------------------------------------------------------
    def list_scenarios(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and _NAME.fullmatch(p.name) and self._versions_in(p)
        )

    def list_versions(self, scenario: str) -> list[int]:
        versions = self._published_versions(scenario)
        if not versions:
            raise ScenarioNotFoundError(f"scenario {scenario!r} has no published version under {self.root}")
        return versions

    def _published_versions(self, scenario: str) -> list[int]:
        path = self.scenario_path(scenario)
        return self._versions_in(path) if path.is_dir() else []

    @staticmethod
    def _versions_in(path: Path) -> list[int]:
        """Published versions: numbered folders holding their manifest (a folder without one is torn, e.g.
        a mirror copied from an object store while a publish was half uploaded; S3 lists only prefixes
        with a manifest as well)."""
        return sorted(
            int(p.name) for p in path.iterdir() if is_version_name(p.name) and (p / MANIFEST_FILE).is_file()
        )

    @staticmethod
    def _next_number(scenario_dir: Path) -> int:
        """The number a new version takes: past every numbered folder, published or torn, and past every
        number this repository ever gave (LAST_NUMBER_FILE), so that a deleted version's number is never
        given again and an alias left on it never names another model. With .publish.lock held."""
        numbers = [int(p.name) for p in scenario_dir.iterdir() if is_number(p.name)]
        with contextlib.suppress(FileNotFoundError, ValueError):  # none yet, or unreadable: the folders count
            numbers.append(int((scenario_dir / LAST_NUMBER_FILE).read_text().strip()))
        return max(numbers, default=0) + 1

    def aliases(self, scenario: str) -> dict[str, int]:
        """Every alias of the scenario and the version it names; ManifestError naming the first alias file
        that cannot be read (read_aliases gives the others all the same)."""
        out = {}
        for alias, version in self.read_aliases(scenario).items():
            if isinstance(version, RepositoryError):
                raise version
            out[alias] = version
        return out

    def read_aliases(self, scenario: str) -> dict[str, int | RepositoryError]:
        """Every alias of the scenario: the version it names, or the ManifestError of an unreadable file."""
        out: dict[str, int | RepositoryError] = {}
        for alias in self._alias_names(scenario):
            try:
                version = self.alias_version(scenario, alias)
            except ManifestError as exc:
                out[alias] = exc
            else:
                if version is not None:
                    out[alias] = version
        return out

    def _alias_names(self, scenario: str) -> list[str]:
        """The scenario's aliases: its alias files but those named like a version or 'latest'."""
        return [name for name in self._alias_file_names(scenario) if not is_reserved_alias(name)]

    def reserved_alias_files(self, scenario: str) -> list[str]:
        """Alias files named all digits or 'latest', left from before such names were refused (5 December
        2026): resolve reads the name as that version or the newest, so they are never listed or read."""
        return [name for name in self._alias_file_names(scenario) if is_reserved_alias(name)]

    def _alias_file_names(self, scenario: str) -> list[str]:
        folder = self._aliases_folder(scenario)
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.json") if _NAME.fullmatch(p.stem))

    def _aliases_folder(self, scenario: str) -> Path:
        """The scenario's `_aliases/` folder (there or not); ManifestError naming it when something else
        is at its path (a file), which no alias can be read from or written into."""
        folder = self.scenario_path(scenario) / ALIASES_DIR
        if folder.exists() and not folder.is_dir():
            raise ManifestError(
                f"{folder} is a file, not a folder: a scenario's aliases are files in its {ALIASES_DIR}/ "
                "folder; move the file away, then promote a version to each alias again"
            )
        return folder

    @staticmethod
    def _check_alias_file(path: Path) -> None:
        """ManifestError naming an alias file's path when a folder (or anything not a file) is there."""
        if path.exists() and not path.is_file():
            raise ManifestError(
                f"alias file {path} is a folder, not a file; move it away, then promote a version to "
                "this alias again"
            )

    def resolve(self, scenario: str, ref: str | int = "production") -> int:
        """Turn an alias, 'latest' or a version number into a published version number; an alias that names
        a version not published (deleted, or torn) is VersionNotFoundError, as that number is."""
        versions = self.list_versions(scenario)
        if isinstance(ref, int) or (isinstance(ref, str) and is_number(ref)):
            try:
                version = int(ref)
            except ValueError:  # thousands of digits: int() refuses them, and no folder has such a name
                raise VersionNotFoundError(
                    f"scenario {scenario!r} has no version {ref[:20]}… ({len(ref)} digits) "
                    f"(published: {versions})"
                ) from None
            if version not in versions:
                raise VersionNotFoundError(self._no_version(scenario, version, versions))
            return version
        if ref == "latest":
            return versions[-1]
        validate_name(ref, "alias")
        version = self.alias_version(scenario, ref)
        if version is None:
            known = sorted(self.read_aliases(scenario))
            raise AliasNotFoundError(f"scenario {scenario!r} has no alias {ref!r} (aliases: {known})")
        # An alias on a deleted version, or on a torn folder without its manifest: not listed, not resolved.
        if version not in versions:
            raise VersionNotFoundError(
                f"scenario {scenario!r}: alias {ref!r} names v{version}, which is not published "
                f"(published: {versions}); promote a published version to {ref!r}"
            )
        return version

    def alias_version(self, scenario: str, alias: str) -> int | None:
        """The version an alias names, None when the scenario has no such alias; ManifestError naming the
        alias file when it cannot be read (not JSON, no whole version number)."""
        path = self.scenario_path(scenario) / ALIASES_DIR / f"{validate_name(alias, 'alias')}.json"
        try:  # one read on the poll path; what is in the way is looked at only when it fails
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            self._check_alias_file(path)  # names the folder
            raise
        except NotADirectoryError:
            self._aliases_folder(scenario)  # names _aliases when it is a file
            return None
        return parse_alias(data, str(path))

    def set_alias(self, scenario: str, alias: str, version: int) -> None:
        """Point alias at version, atomically; the version must exist and verify. An unreadable alias
        file is overwritten."""
        check_alias_name(alias)
        self.verify(scenario, version)
        self._write_alias(scenario, alias, int(version))

    @contextlib.contextmanager
    def alias_lock(self, scenario: str) -> Iterator[None]:
        """Alias writes of one scenario one at a time, on a local repository: an exclusive flock on the
        scenario's folder, held by whoever reads an alias, verifies a version (seconds to minutes) and
        writes it (`labelwise promote`, to a newer version or back to an older one, and `labelwise train
        --alias`), so that a slow write started first cannot overwrite one started after it. Not
        re-entrant (a second flock from this process waits for the first). An object store has no such
        lock (ObjectStoreRepository): its writes stay last-writer-wins (docs/artifacts.md)."""
        folder = self.scenario_path(scenario)
        if not folder.is_dir():
            yield
            return
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def check_alias_writable(self, scenario: str, alias: str) -> None:
        """ManifestError naming what is in the way of writing the alias (its scenario's `_aliases` a file,
        the alias file a folder): asked before a run that would point the alias at its version, so that
        the run is not trained and published only to fail there."""
        self._check_alias_file(self._aliases_folder(scenario) / f"{validate_name(alias, 'alias')}.json")

    def _write_alias(self, scenario: str, alias: str, version: int) -> None:
        folder = self._aliases_folder(scenario)
        self._check_alias_file(folder / f"{alias}.json")
        folder.mkdir(exist_ok=True)
        _write_json_atomic(folder / f"{alias}.json", {"version": version})

    def fingerprint(self, scenario: str, version: int, alias: str) -> tuple:
        """What changes when a version's files or the alias are rewritten (a refused version is retried)."""
        folder = self.version_path(scenario, version)
        paths = sorted(folder.rglob("*")) if folder.is_dir() else []
        if not is_reserved_alias(alias):  # 'latest' or a number reads no alias file, even one left there
            paths.append(self.scenario_path(scenario) / ALIASES_DIR / f"{alias}.json")
        with contextlib.suppress(RepositoryError):  # a restored base is tried again, too
            # Every file of the base folders, not only base.json: a mirror (rclone) can copy base.json
            # before the graph it lists, and the graph arriving later must bring the version back.
            base = read_manifest(folder / MANIFEST_FILE).base_encoder
            bases = list(base.graph_folders()) if base is not None else []
            if base is not None:  # and so is a version refused by a multi-adapter graph re-exported since
                bases += [f for f in self.base_folders(base.key) if is_multi_adapter_folder(f)]
            for name in bases:  # base.json among them
                base_folder = self.base_path(base.key, name)
                paths.extend(sorted(base_folder.rglob("*")) if base_folder.is_dir() else [])
        stats = []
        for path in paths:
            with contextlib.suppress(OSError):
                st = path.stat()
                stats.append((str(path), st.st_size, st.st_mtime_ns))
        return tuple(stats)

    def manifest_stamp(self, scenario: str, version: int) -> tuple | None:
        """One stat of the version's manifest.json (None when there is none): it changes when the version
        is published again under its number (its folder replaced, or removed and written again), so a
        replica polling its alias notices that without reading the manifest every poll."""
        try:
            st = (self.version_path(scenario, version) / MANIFEST_FILE).stat()
        except FileNotFoundError:
            return None
        # the inode and ctime too: a folder moved over the old one may keep the old file's size and mtime
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    # ---- manifests ------------------------------------------------------------------------
    def load_manifest(self, scenario: str, version: int) -> Manifest:
        """A published version's manifest; a number with no folder, or a folder without its manifest.json
        (torn, or a stray mkdir), is VersionNotFoundError, as resolve says of it."""
        path = self.version_path(scenario, version)
        if not (path / MANIFEST_FILE).is_file():
            # a scenario with no version at all is ScenarioNotFoundError; its own folder is named, though
            versions = self._published_versions(scenario) if path.is_dir() else self.list_versions(scenario)
            raise VersionNotFoundError(self._no_version(scenario, version, versions))
        return read_manifest(path / MANIFEST_FILE)

    def _no_version(self, scenario: str, version: int, versions: list[int]) -> str:
        """What a user is told of a version number that is not published: the published ones, and why a
        folder of that number does not count (it holds no manifest.json)."""
        message = f"scenario {scenario!r} has no version {version} (published: {versions})"
        torn = self._torn_version_place(scenario, version) if is_number(str(version)) else None
        return message + (f"; {torn} has no {MANIFEST_FILE} (a torn or unfinished publish)" if torn else "")

    def _torn_version_place(self, scenario: str, version: int) -> str | None:
        """Where a version number's files lie without its manifest ('its folder …'), or None."""
        folder = self.scenario_path(scenario) / str(version)
        return f"its folder {folder}" if folder.is_dir() else None

    def verify(self, scenario: str, version: int, bases: bool = True) -> Manifest:
        """Re-hash every file of a version; raise naming the first file that does not match.

        First, UnsafePathError for a path that leaves the folder (`..`, absolute, a symlink out), a
        graph or head without a checksum, or a file the manifest does not list. Then the plain base
        encoder folders the version reads (plain_base_folders: none for a LoRA version, as the loader),
        their errors prefixed `<scenario> v<version>: `. bases=False leaves those out (a re-export
        verifies or rebuilds them itself).
        """
        manifest = self.load_manifest(scenario, version)
        folder = self.version_path(scenario, version)
        what = f"{scenario} v{version}"
        if manifest.scenario != scenario or manifest.version != int(version):
            raise ManifestError(
                f"{what}: manifest says {manifest.scenario} v{manifest.version}; the folder was moved"
            )
        if folder.is_symlink():  # its bytes live elsewhere and can change unseen, as a link inside can
            raise UnsafePathError(
                f"{what}: the version folder {folder} is a symlink (to {os.readlink(folder)!r}); "
                "a version is a folder of its own"
            )
        _check_manifest_paths(folder, manifest, what)
        _check_files(folder, manifest.files, MANIFEST_FILE, what)
        if bases:
            self._verify_plain_bases(manifest, what)
        return manifest

    def _verify_plain_bases(self, manifest: Manifest, what: str) -> None:
        """verify_base on each plain base folder the version reads (plain_base_folders), an error said of
        the version (`what`), as its own errors are."""
        for base_folder in plain_base_folders(manifest):
            assert manifest.base_encoder is not None  # plain_base_folders names none without one
            try:
                self.verify_base(manifest.base_encoder.key, base_folder)
            except RepositoryError as exc:
                raise type(exc)(f"{what}: {exc}") from exc

    # ---- publishing -----------------------------------------------------------------------
    @contextlib.contextmanager
    def new_version(self, scenario: str, **fields: Any) -> Iterator[VersionDraft]:
        """Write a new version: files go into draft.path, manifest fields into draft.fields.

        On a clean exit the files are hashed, the manifest written, everything fsynced and the
        folder renamed to the next free version number. On any error nothing is published.
        """
        scenario_dir = self.scenario_path(scenario)
        tmp = draft_folder(scenario_dir)
        draft = VersionDraft(scenario=scenario, path=tmp, fields=dict(fields))
        try:
            yield draft
            files = draft_files(tmp, f"{scenario} (draft, nothing published)", MANIFEST_FILE)
            with _locked(scenario_dir / ".publish.lock"):
                version = self._next_number(scenario_dir)
                try:
                    manifest = Manifest(
                        scenario=scenario,
                        version=version,
                        files=files,
                        code_revision=draft.fields.pop("code_revision", None) or code_revision(),
                        **draft.fields,
                    )
                except ValidationError as exc:
                    raise ManifestError(f"{scenario}: manifest fields are invalid: {exc}") from exc
                _check_manifest_paths(tmp, manifest, f"{scenario} v{version} (draft, nothing published)")
                (tmp / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))
                _fsync_tree(tmp)
                target = scenario_dir / str(version)
                # The number is recorded as given first: a failure here (a full disk) publishes nothing,
                # and one after the rename would report a failure for a version that was published.
                _write_json_atomic(scenario_dir / LAST_NUMBER_FILE, version)
                # rename() refuses a non-empty target: a version folder is never replaced.
                os.rename(tmp, target)
                _fsync_dir(scenario_dir)
            draft.version, draft.manifest = version, manifest
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    # ---- shared base encoders -------------------------------------------------------------
    def has_base(self, key: str, precision: str) -> bool:
        return (self.base_path(key, precision) / BASE_INFO_FILE).is_file()

    def base_folders(self, key: str) -> list[str]:
        """The folder names under `_bases/<key>/` (published or not: has_base says which are)."""
        folder = self.base_path(key)
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    @contextlib.contextmanager
    def new_base(self, key: str, precision: str, **info: Any) -> Iterator[BaseDraft]:
        """Write a base encoder once. If another writer got there first, ours is discarded."""
        target = self.base_path(key, precision)
        tmp = draft_folder(target.parent)
        draft = BaseDraft(key=key, precision=precision, path=tmp, info=dict(info))
        try:
            yield draft
            (tmp / BASE_INFO_FILE).write_bytes(sealed_base(draft)[1])
            _fsync_tree(tmp)
            with _locked(target.parent / ".publish.lock"):
                if target.exists() and not (target / BASE_INFO_FILE).is_file():
                    # A folder without its base.json (a mirror copied mid-upload, a hand-deleted file)
                    # is no base: no version can verify against it, and keeping it would keep every
                    # version that names it broken. A writer renames a whole folder, so none is writing it.
                    aside = target.parent / f"{_TMP_PREFIX}broken-{uuid.uuid4().hex}-{target.name}"
                    os.rename(target, aside)
                    shutil.rmtree(aside, ignore_errors=True)
                if not target.exists():
                    os.rename(tmp, target)
                    _fsync_dir(target.parent)
                    draft.published = True
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def base_info(self, key: str, precision: str) -> dict[str, Any]:
        path = self.base_path(key, precision) / BASE_INFO_FILE
        if not path.is_file():
            raise VersionNotFoundError(f"base encoder {key!r} has no {precision} export under {self.root}")
        return parse_base_info(path.read_bytes(), f"base encoder {key!r} {precision}")

    def verify_base(self, key: str, precision: str) -> dict[str, Any]:
        what = f"base {key} {precision}"
        for path, kind in ((self.base_path(key), "base key"), (self.base_path(key, precision), "base")):
            if path.is_symlink():  # its bytes live elsewhere and can change unseen, as a version folder's can
                raise UnsafePathError(
                    f"{what}: the {kind} folder {path} is a symlink (to {os.readlink(path)!r}); "
                    "a base is a folder of its own"
                )
        info = self.base_info(key, precision)
        if info.get("schema_version") != SCHEMA_VERSION:
            raise SchemaVersionError(
                f"base encoder {key!r} {precision}: schema version {info.get('schema_version')!r}, "
                f"this code reads {SCHEMA_VERSION}"
            )
        check_base_identity(info, key, precision, what)
        folder = self.base_path(key, precision)
        try:
            files = {k: FileEntry(**v) for k, v in info["files"].items()}
        except (KeyError, TypeError, AttributeError, ValidationError) as exc:
            raise ManifestError(f"{what}: {BASE_INFO_FILE} has no valid 'files' table ({exc})") from exc
        _check_no_link_out(folder, what)
        _check_contained(folder, [(f"files key {rel!r}", rel) for rel in files], what)
        _check_all_listed(folder, files, BASE_INFO_FILE, what)
        _check_files(folder, files, BASE_INFO_FILE, what)
        return info


def is_reserved_alias(name: str) -> bool:
    """'latest' or all digits: a name resolve reads as the newest version or a version number."""
    return name == "latest" or is_number(name)


def check_alias_name(alias: str) -> str:
    """alias if it can name an alias: a safe name that is neither 'latest' nor all digits (a version)."""
    validate_name(alias, "alias")
    if alias == "latest":
        raise InvalidNameError("alias 'latest' is reserved: it always means the newest version")
    if is_number(alias):
        raise InvalidNameError(
            f"invalid alias name {alias!r}: an all-digit name is read as a version number; "
            "use a name with a letter in it"
        )
    return alias


def parse_alias(data: bytes, path: str) -> int:
    """The version an alias file's bytes name; ManifestError naming the file when they do not."""
    try:
        payload = json.loads(data)
    except ValueError as exc:  # not JSON, not UTF-8, or a number of thousands of digits (int() refuses it)
        raise ManifestError(f"alias file {path} is unreadable: not JSON ({exc})") from None
    version = payload.get("version") if isinstance(payload, dict) else None
    if isinstance(version, str) and is_number(version):
        version = int(version)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ManifestError(
            f'alias file {path} is unreadable: expected {{"version": N}} with N a version number, '
            f"found {data[:80]!r}; promote a version to this alias again to rewrite it"
        )
    return version


def read_manifest(path: Path) -> Manifest:
    """Parse manifest.json, raising ManifestError or SchemaVersionError naming the file."""
    if not path.is_file():
        raise ManifestError(f"{path}: manifest.json is missing")
    return parse_manifest(path.read_bytes(), str(path))


def parse_manifest(data: bytes, path: str) -> Manifest:
    """Parse manifest.json's bytes; errors name `path` (a file or an object-store key)."""
    try:
        raw = json.loads(data.decode("utf-8"))
    except ValueError as exc:  # not JSON, not UTF-8, or a number of thousands of digits
        raise ManifestError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: expected a JSON object")
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path}: schema version {raw.get('schema_version')!r}, this code reads {SCHEMA_VERSION}"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:  # `field: message` a problem, not pydantic's dump of the whole manifest
        problems = validation_problems(exc)
        raise ManifestError(f"{path}: does not match the manifest schema: {problems}") from exc
