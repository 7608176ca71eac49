"""The model repository in an object store (`s3://bucket/prefix`), with the guarantees of the local one.

Same layout as a local root (layout.py). What replaces fsync + rename, since object stores have no
rename (docs/artifacts.md, "Object storage"):

- **Write-once versions.** A publisher first claims the version number with a conditional PUT of
  `<scenario>/_claims/<N>` (`If-None-Match: *`: one publisher wins each number), uploads every file, and
  writes `<scenario>/<N>/manifest.json` **last**, conditionally too. A version exists only once its
  manifest does: a publisher that dies half-way leaves a torn prefix that nothing lists, resolves or
  serves, and the next publisher takes N+1.
- **Alias switch by a single PUT** of `<scenario>/_aliases/<alias>.json`: a reader gets the old object or
  the new one (S3 is strongly consistent for reads, overwrites and listings since December 2020).
- **Bases** (`_bases/<key>/<folder>/`): claimed by `_bases/<key>/_claims/<folder>`, `base.json` last.
- **Local cache, verified.** `verify` checks the manifest's paths (relative, no `..`), that every object
  under the version is listed with its size, then downloads the version into a local folder (a local
  repository with the same layout), checking each file's sha256 as it lands, and runs the local checks on
  it. `version_path` and `base_path` name that local copy, so the ONNX loader opens local files.
- **Local cache, bounded.** When a version is verified (before its download) or published, the
  scenario's other cached versions but the `cache_keep` - 1 most recently verified
  (LABELWISE_REPOSITORY_CACHE_KEEP, 3) are removed: a replica that verifies a version at every promotion
  for weeks, or a machine that publishes one a day, keeps a few models on disk, not all of them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import (
    IntegrityError,
    ManifestError,
    RepositoryError,
    SchemaVersionError,
    UnsafePathError,
    UsageError,
    VersionNotFoundError,
)
from .identity import file_sha256
from .layout import (
    ALIASES_DIR,
    BASE_INFO_FILE,
    BASES_DIR,
    CLAIMS_DIR,
    MANIFEST_FILE,
    is_contained,
    is_multi_adapter_folder,
    is_number,
    is_version_name,
)
from .manifest import SCHEMA_VERSION, FileEntry, Manifest
from .repository import (
    _NAME,
    _TMP_PREFIX,
    BaseDraft,
    ModelRepository,
    VersionDraft,
    _check_manifest_paths,
    check_base_identity,
    code_revision,
    default_root,
    draft_files,
    draft_folder,
    is_reserved_alias,
    parse_alias,
    parse_base_info,
    parse_manifest,
    sealed_base,
    validate_name,
)
from .storage import ObjectStore, parse_root

log = logging.getLogger(__name__)

CACHE_ENV = "LABELWISE_REPOSITORY_CACHE"
# How many versions of a scenario the local cache keeps (the one just verified and the most recently
# verified others); 0 or unset: DEFAULT_CACHE_KEEP.
CACHE_KEEP_ENV = "LABELWISE_REPOSITORY_CACHE_KEEP"
DEFAULT_CACHE_KEEP = 3
_MAX_CLAIM_TRIES = 1000
# A cached copy is stamped by an empty folder of this prefix inside it (`_stamp_name`).
_STAMP_PREFIX = ".stamp-"
# How many times a copy is fetched while other processes of the node keep renaming theirs, made from
# other objects, into its place first.
_MATERIALIZE_TRIES = 3


def default_cache_dir(url: str) -> Path:
    """`$LABELWISE_REPOSITORY_CACHE/<url slug>`, else `~/.cache/labelwise/repositories/<url slug>`."""
    base = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "labelwise" / "repositories"
    slug = "".join(c if c.isalnum() else "-" for c in url.split("://", 1)[-1])[:80].strip("-")
    return Path(base) / f"{slug}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"


def _cache_keep(value: int | None = None) -> int:
    """How many cached versions of a scenario `verify` leaves: value, else $LABELWISE_REPOSITORY_CACHE_KEEP;
    0 or unset: DEFAULT_CACHE_KEEP. UsageError naming the parameter or the variable for anything but a
    whole number >= 0."""
    raw: Any
    if value is not None:
        where, raw = "cache_keep", value
        keep = value if isinstance(value, int) and not isinstance(value, bool) else -1
    else:
        where, raw = CACHE_KEEP_ENV, (os.environ.get(CACHE_KEEP_ENV) or "").strip()
        keep = int(raw) if raw.isascii() and raw.isdigit() else (0 if raw == "" else -1)
    if keep < 0:
        raise UsageError(
            f"{where}={raw!r}: the number of cached versions to keep per scenario must be a whole number "
            f">= 1 (0 or unset: {DEFAULT_CACHE_KEEP})"
        )
    return keep or DEFAULT_CACHE_KEEP


# How long a writer that lost a base's claim waits for the winner's base.json (an int8 MiniLM base
# uploads in seconds; a large encoder over a slow link in minutes).
BASE_CLAIM_WAIT_ENV = "LABELWISE_BASE_CLAIM_WAIT_S"
DEFAULT_BASE_CLAIM_WAIT_S = 600.0


def _base_claim_wait_s() -> float:
    """$LABELWISE_BASE_CLAIM_WAIT_S, else DEFAULT_BASE_CLAIM_WAIT_S; UsageError naming the variable for
    anything but a finite number of seconds >= 0 (checked when the repository opens too: the wait itself
    comes after a run has trained)."""
    raw = (os.environ.get(BASE_CLAIM_WAIT_ENV) or "").strip()
    if not raw:
        return DEFAULT_BASE_CLAIM_WAIT_S
    try:
        wait_s = float(raw)
    except ValueError:
        wait_s = -1.0
    if not math.isfinite(wait_s) or wait_s < 0:
        raise UsageError(
            f"{BASE_CLAIM_WAIT_ENV}={raw!r}: how long to wait for another writer's base encoder must be a "
            f"number of seconds >= 0 (unset: {DEFAULT_BASE_CLAIM_WAIT_S:g})"
        )
    return wait_s


def _claim_body() -> bytes:
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}).encode()


class ObjectStoreRepository(ModelRepository):
    """A ModelRepository whose root is an object-store URL; `ModelRepository(url)` returns one.

    Opening it lists one key under its prefix: missing credentials, a missing bucket or an unreachable
    endpoint are refused here, by name (ObjectStoreError), not at the first request that needs a file.
    cache_keep: how many cached versions of a scenario `verify` leaves (else $LABELWISE_REPOSITORY_CACHE_KEEP;
    0 or unset: 3); a bad value (or a bad $LABELWISE_BASE_CLAIM_WAIT_S) is refused here too, by name, before
    the store is asked.
    """

    @contextlib.contextmanager
    def alias_lock(self, scenario: str) -> Iterator[None]:
        """No lock on an object store: its alias writes stay last-writer-wins (docs/artifacts.md)."""
        yield

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        cache_dir: str | Path | None = None,
        cache_keep: int | None = None,
    ) -> None:
        self.cache_keep = _cache_keep(cache_keep)
        _base_claim_wait_s()  # a bad value is refused now, not after a run has trained (read again there)
        url = parse_root(root if root is not None else default_root())
        if not isinstance(url, str):
            raise ValueError(f"{root!r} is a local path, not an object-store URL: use ModelRepository")
        self.root = url
        self.store = ObjectStore(url)
        self.store.check_access()
        self.cache = ModelRepository(Path(cache_dir) if cache_dir is not None else default_cache_dir(url))

    def __repr__(self) -> str:
        return f"ObjectStoreRepository({self.root!r}, cache={str(self.cache.root)!r})"

    # ---- keys in the store; paths in the local cache ------------------------------------
    @staticmethod
    def _version_key(scenario: str, version: int) -> str:
        return f"{validate_name(scenario)}/{int(version)}"

    @staticmethod
    def _base_key(key: str, folder: str) -> str:
        return f"{BASES_DIR}/{validate_name(key, 'base key')}/{validate_name(folder, 'precision')}"

    def scenario_path(self, scenario: str) -> Path:
        """The scenario's folder in the local cache."""
        return self.cache.scenario_path(scenario)

    def version_path(self, scenario: str, version: int) -> Path:
        """The local, checksum-verified copy of a version (present once `verify` has run)."""
        return self.cache.version_path(scenario, version)

    def base_path(self, key: str, precision: str | None = None) -> Path:
        """The local, checksum-verified copy of a base (present once `verify_base` has run)."""
        return self.cache.base_path(key, precision)

    # ---- listing and resolving ----------------------------------------------------------
    def list_scenarios(self) -> list[str]:
        """Names with a published version: one delimiter listing of the root, then per candidate one of
        its prefix and a HEAD of its newest manifest (not a listing of every object in the store)."""
        return [n for n in self.store.children("") if _NAME.fullmatch(n) and self._newest_published(n)]

    def _newest_published(self, scenario: str) -> int | None:
        """The highest version number whose manifest exists (torn numbers are skipped), or None."""
        name = validate_name(scenario)
        numbers = sorted((int(n) for n in self.store.children(name) if is_version_name(n)), reverse=True)
        for number in numbers:
            if self.store.exists(f"{name}/{number}/{MANIFEST_FILE}"):
                return number
        return None

    def resolve(self, scenario: str, ref: str | int = "production") -> int:
        """As ModelRepository.resolve; an alias costs one GET and one HEAD of the manifest it names, and
        'latest' a delimiter listing and a HEAD: what every replica does every poll."""
        if isinstance(ref, str) and not is_number(ref):
            if ref == "latest":
                newest = self._newest_published(scenario)
                if newest is not None:
                    return newest
            else:
                version = self.alias_version(scenario, validate_name(ref, "alias"))
                if version is not None and self.store.exists(
                    f"{self._version_key(scenario, version)}/{MANIFEST_FILE}"
                ):
                    return version
        return super().resolve(scenario, ref)  # errors, numbers: as a local root

    def _published_versions(self, scenario: str) -> list[int]:
        """Versions whose marker (manifest.json) exists: a torn upload is not a version."""
        listing = self.store.files(validate_name(scenario))
        return sorted(
            int(rel.split("/")[0])
            for rel in listing
            if rel.endswith(f"/{MANIFEST_FILE}") and _is_version(rel)
        )

    def _alias_file_names(self, scenario: str) -> list[str]:
        prefix = f"{validate_name(scenario)}/{ALIASES_DIR}"
        names = (n[: -len(".json")] for n in self.store.children(prefix) if n.endswith(".json"))
        return sorted(n for n in names if _NAME.fullmatch(n))

    def alias_version(self, scenario: str, alias: str) -> int | None:
        key = f"{validate_name(scenario)}/{ALIASES_DIR}/{validate_name(alias, 'alias')}.json"
        try:
            data = self.store.read_bytes(key)
        except FileNotFoundError:
            return None
        return parse_alias(data, f"{self.root}/{key}")

    def check_alias_writable(self, scenario: str, alias: str) -> None:
        """An object store has no folders to be in the way of an alias object."""
        validate_name(alias, "alias")

    def _write_alias(self, scenario: str, alias: str, version: int) -> None:
        body = json.dumps({"version": version}, indent=2, sort_keys=True).encode()
        self.store.put_bytes(f"{scenario}/{ALIASES_DIR}/{alias}.json", body)

    def fingerprint(self, scenario: str, version: int, alias: str) -> tuple:
        """Keys, sizes, ETags and modification times of the version's objects, of the alias object and of
        the `base.json` of each base the version reads: promoting the same version again (identical
        bytes, same ETag) or restoring a base changes it, so a refused version is tried again."""
        key = self._version_key(scenario, version)
        listing = self.store.files(key)
        stats: list[tuple] = [
            (rel, e["size"], e["etag"], e["modified"]) for rel, e in sorted(listing.items())
        ]
        if not is_reserved_alias(alias):  # 'latest' or a number reads no alias object, even one left there
            alias_key = f"{validate_name(scenario)}/{ALIASES_DIR}/{alias}.json"
            stats.append(_stat_row(alias_key, self.store.stat(alias_key)))
        for base in self._base_info_keys(scenario, version):
            stats.append(_stat_row(base, self.store.stat(base)))
        return tuple(stats)

    def manifest_stamp(self, scenario: str, version: int) -> tuple | None:
        """Size, ETag and modification time of the version's manifest object, one HEAD (None when there is
        none): as ModelRepository.manifest_stamp, a version published again under its number changes it."""
        entry = self.store.stat(f"{self._version_key(scenario, version)}/{MANIFEST_FILE}")
        return None if entry is None else (entry["size"], entry["etag"], entry["modified"])

    def _base_info_keys(self, scenario: str, version: int) -> list[str]:
        """The `base.json` keys of the bases a version reads ([] when its manifest cannot be read)."""
        try:
            manifest = self.load_manifest(scenario, version)
        except RepositoryError:
            return []
        base = manifest.base_encoder
        if base is None:
            return []
        with contextlib.suppress(RepositoryError):
            folders = list(base.graph_folders())
            # and the multi-adapter graphs of that base: a version they refused is retried once re-exported
            folders += [f for f in self.base_folders(base.key) if is_multi_adapter_folder(f)]
            return [f"{self._base_key(base.key, f)}/{BASE_INFO_FILE}" for f in folders]
        return []

    # ---- manifests ----------------------------------------------------------------------
    def _manifest_bytes(self, scenario: str, version: int) -> bytes:
        try:
            return self.store.read_bytes(f"{self._version_key(scenario, version)}/{MANIFEST_FILE}")
        except FileNotFoundError:
            versions = self.list_versions(scenario)  # raises ScenarioNotFoundError when it has none
            raise VersionNotFoundError(self._no_version(scenario, version, versions)) from None

    def _torn_version_place(self, scenario: str, version: int) -> str | None:
        """As ModelRepository's, of the store's prefix (not of the local cache)."""
        key = self._version_key(scenario, version)
        return f"its prefix {self.root}/{key}" if self.store.files(key) else None

    def load_manifest(self, scenario: str, version: int) -> Manifest:
        data = self._manifest_bytes(scenario, version)
        return parse_manifest(data, f"{self.root}/{self._version_key(scenario, version)}/{MANIFEST_FILE}")

    def verify(self, scenario: str, version: int, bases: bool = True) -> Manifest:
        """Check the version in the store, copy it into the local cache hashing each file, verify the copy.
        bases=False leaves out the shared base encoder the version reads, as ModelRepository.verify does
        (a re-export verifies or rebuilds it itself).

        UnsafePathError for a path that leaves the version (`..`, absolute), a graph or head without a
        checksum, or an object the manifest does not list; IntegrityError for a missing object, a wrong
        size or sha256. Nothing that fails lands in the cache.
        """
        data = self._manifest_bytes(scenario, version)
        key = self._version_key(scenario, version)
        manifest = parse_manifest(data, f"{self.root}/{key}/{MANIFEST_FILE}")
        what = f"{scenario} v{version}"
        if manifest.scenario != scenario or manifest.version != int(version):
            raise ManifestError(
                f"{what}: manifest says {manifest.scenario} v{manifest.version}; the objects were moved"
            )
        for field_name, rel in manifest.named_paths():
            if not is_contained(rel):
                raise UnsafePathError(
                    f"{what}: {field_name} {rel!r} is not a relative path inside {self.root}/{key}"
                )
        for field_name, rel in manifest.artifact_paths():
            if rel not in manifest.files:
                raise UnsafePathError(
                    f"{what}: {field_name} {rel!r} has no checksum: it is not a key of the manifest's files"
                )
        listing = self._check_listing(key, manifest.files, MANIFEST_FILE, what)
        if bases:
            self._verify_plain_bases(manifest, what)
        target = self.cache.version_path(scenario, version)
        # Before the download, not after: a disk with room for cache_keep copies takes the new one, and a
        # download that fails on a full disk has made room for the next try all the same.
        self._bound_cache(scenario, int(version), what)
        verify_local = functools.partial(self.cache.verify, bases=bases)
        files = manifest.files
        cached = (key, target, files, MANIFEST_FILE, data, listing, what)
        verified = self._cached(*cached, verify_local, scenario, version)
        _touch(target)
        return verified

    def _bound_cache(self, scenario: str, version: int, what: str) -> None:
        """_prune_cache, a failure only logged: a copy it could not remove costs disk space, never the
        verify or publish that asked."""
        try:
            self._prune_cache(scenario, version)
        except Exception as exc:
            log.warning("%s: could not prune the local cache %s: %s", what, self.cache.root, exc)

    def _prune_cache(self, scenario: str, version: int) -> list[int]:
        """Remove the scenario's cached version folders but `version` (being verified, or just published)
        and the cache_keep - 1 others verified last; returns the versions this process removed.

        Recency is the version folder's own mtime: set when the copy lands (its stamp is the last entry made
        in it before the rename) and again by every successful verify (`_touch`); nothing else writes in a
        cached copy, so it is "last fetched or verified", shared by every process of the node and surviving
        their restarts, with no file of its own beside the copy. Only numbered folders of this scenario are
        candidates (never `_bases/`, aliases, claims, drafts, stamps). Each goes by `_discard` (renamed
        aside, then deleted), so a reader never meets a half-deleted copy and a folder another process
        removed first is skipped; a process verifying a copy removed under it fetches it again (`_cached`).
        """
        folder = self.cache.scenario_path(scenario)
        others: list[tuple[int, int, str]] = []
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return []
        for entry in entries:
            if not is_number(entry.name) or entry.name == str(version):
                continue
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                others.append((entry.stat(follow_symlinks=False).st_mtime_ns, int(entry.name), entry.name))
            except OSError:  # removed meanwhile
                continue
        others.sort(reverse=True)  # most recent first; a tie keeps the higher number
        removed = []
        for _, number, name in others[self.cache_keep - 1 :]:  # cache_keep >= 1
            if _discard(folder / name):
                removed.append(number)
        if removed:
            log.info(
                "%s: removed the local copies of v%s from %s, keeping v%s and the %d other versions verified "
                "last (%s=%d)",
                scenario,
                ", v".join(map(str, sorted(removed))),
                folder,
                version,
                self.cache_keep - 1,
                CACHE_KEEP_ENV,
                self.cache_keep,
            )
        return sorted(removed)

    def _check_listing(
        self, key: str, files: dict[str, FileEntry], marker: str, what: str
    ) -> dict[str, dict[str, Any]]:
        """Every object under key is the marker or a listed file; every listed file is there, at its size.
        Returns the listing."""
        listing = self.store.files(key)
        unlisted = sorted(rel for rel in listing if rel != marker and rel not in files)
        if unlisted:
            raise UnsafePathError(
                f"{what}: {unlisted[0]!r} is in {self.root}/{key} but has no checksum in {marker}"
                + (f" (and {len(unlisted) - 1} more)" if len(unlisted) > 1 else "")
            )
        for rel, entry in files.items():
            if rel not in listing:
                raise IntegrityError(
                    f"{what}: file {rel!r} listed in {marker} is missing from {self.root}/{key}"
                )
            if listing[rel]["size"] != entry.size_bytes:
                raise IntegrityError(
                    f"{what}: file {rel!r} is {listing[rel]['size']} bytes, {marker} says {entry.size_bytes}"
                )
        return listing

    def _cached(
        self,
        key: str,
        target: Path,
        files: dict[str, FileEntry],
        marker: str,
        marker_bytes: bytes,
        listing: dict[str, dict[str, Any]],
        what: str,
        verify_local: Any,
        *args: Any,
    ) -> Any:
        """Make target the local copy of key (downloading when absent or stale) and verify it locally.

        Any refusal of the copy (a file that no longer matches, a marker file that no longer parses, a
        stray file) is rot on this disk, the store having been checked already, or a copy another process
        of the node pruned (`_prune_cache`) while this one checked it: fetched again, once."""
        for attempt in range(2):
            self._materialize(key, target, files, marker, marker_bytes, listing, what)
            try:
                return verify_local(*args)
            except (RepositoryError, FileNotFoundError):  # FileNotFoundError: pruned between two file calls
                if attempt:
                    raise
                _discard(target)  # the cached copy rotted on disk: fetch it again once
        raise AssertionError("unreachable")

    def _materialize(
        self,
        key: str,
        target: Path,
        files: dict[str, FileEntry],
        marker: str,
        marker_bytes: bytes,
        listing: dict[str, dict[str, Any]],
        what: str,
    ) -> None:
        """target as a copy of the objects under key, kept while it holds the store's marker bytes and its
        stamp (`_stamp`: those bytes and every object's ETag) is the store's; else downloaded again, each
        file checked on the way.

        The stamp is an empty folder inside the copy, made before the copy is renamed into place: a copy and
        its stamp land together, so a process that loses the rename to another (of this node, sharing the
        cache) checks the other's copy by its own stamp instead of pinning its stamp on the other's bytes.
        """
        stamp = _stamp_name(_stamp(marker_bytes, files, listing))
        for attempt in range(_MATERIALIZE_TRIES + 1):
            if target.is_dir():
                if _is_current(target, marker, marker_bytes, stamp):
                    return
                # Another version under the same number (a re-created bucket), an object rewritten in the
                # store since it was cached (whose copy here would hide that it no longer matches), a
                # marker file that rotted on disk, or a copy cached before stamps: not what the store holds.
                _discard(target)
                with contextlib.suppress(OSError):  # the stamp file of a copy cached before stamps moved in
                    (target.parent / f".{target.name}.stamp").unlink()
            if attempt == _MATERIALIZE_TRIES:
                break
            self._fetch(key, target, files, marker, marker_bytes, stamp, what)
        raise IntegrityError(
            f"{what}: the local copy {target} was replaced {_MATERIALIZE_TRIES} times by another process "
            f"with one made from other objects than {self.root}/{key} holds now; verify again"
        )

    def _fetch(
        self,
        key: str,
        target: Path,
        files: dict[str, FileEntry],
        marker: str,
        marker_bytes: bytes,
        stamp: str,
        what: str,
    ) -> None:
        """Download the objects under key into a temp folder, stamp it, rename it to target; when another
        process renamed its copy there first, that copy (and its stamp) is left as it is."""
        for rel in files:  # an object store holds both `a` and `a/b`; a disk cannot
            folder = next((p for p in Path(rel).parents if p.as_posix() in files), None)
            if folder is not None:
                raise IntegrityError(
                    f"{what}: {marker} lists {folder.as_posix()!r} as a file and as the folder of {rel!r}"
                )
        # as a publish's: a download a killed process left here a day ago goes first (replicas never publish)
        tmp = draft_folder(target.parent)
        try:
            for rel, entry in files.items():
                local = tmp / rel  # rel was checked to be relative and free of `..`
                try:
                    self.store.download(f"{key}/{rel}", local)
                except FileNotFoundError:  # deleted since the listing
                    raise IntegrityError(f"{what}: file {rel!r} is missing from {self.root}/{key}") from None
                if local.stat().st_size != entry.size_bytes or file_sha256(local) != entry.sha256:
                    raise IntegrityError(f"{what}: file {rel!r} does not match its sha256 in {marker}")
            (tmp / marker).write_bytes(marker_bytes)
            (tmp / stamp).mkdir()
            try:
                os.rename(tmp, target)
            except OSError:
                if not target.is_dir():
                    raise
                # another process of this node renamed its copy there first: checked by the caller
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _adopt(
        self, tmp: Path, target: Path, key: str, files: dict[str, FileEntry], marker: str, body: bytes
    ) -> None:
        """Make a draft just uploaded under key the cached copy, stamped as `verify` would stamp it, so that
        promoting the version just published does not download it again. Left out (the draft is dropped)
        unless a fresh listing of key holds exactly the draft's files at their sizes and the marker."""
        listing = self.store.files(key)
        expected = {rel: entry.size_bytes for rel, entry in files.items()} | {marker: len(body)}
        if {rel: row["size"] for rel, row in listing.items()} != expected:
            return
        (tmp / marker).write_bytes(body)
        (tmp / _stamp_name(_stamp(body, files, listing))).mkdir()
        os.rename(tmp, target)

    # ---- publishing ---------------------------------------------------------------------
    @contextlib.contextmanager
    def new_version(self, scenario: str, **fields: Any) -> Iterator[VersionDraft]:
        """Write a new version: files go into draft.path (local), manifest fields into draft.fields.

        On a clean exit: hash and check as for a local root, claim the next number, upload every file,
        then the manifest last. On any error before the manifest, nothing is published.
        """
        tmp = draft_folder(self.cache.scenario_path(scenario))
        draft = VersionDraft(scenario=scenario, path=tmp, fields=dict(fields))
        try:
            yield draft
            files = draft_files(tmp, f"{scenario} (draft, nothing published)", MANIFEST_FILE)
            revision = draft.fields.pop("code_revision", None) or code_revision()
            version = self._claim(scenario, self._next_number(scenario))
            try:
                manifest = Manifest(
                    scenario=scenario, version=version, files=files, code_revision=revision, **draft.fields
                )
            except ValidationError as exc:
                raise ManifestError(f"{scenario}: manifest fields are invalid: {exc}") from exc
            _check_manifest_paths(tmp, manifest, f"{scenario} v{version} (draft, nothing published)")
            key = self._version_key(scenario, version)
            for rel in files:
                self.store.upload(tmp / rel, f"{key}/{rel}")
            body = manifest.model_dump_json(indent=2).encode()
            if not self.store.create_bytes(f"{key}/{MANIFEST_FILE}", body):
                raise ManifestError(f"{scenario} v{version}: its manifest exists already; nothing published")
            # Published from here on: a local failure (a full disk) or a failed listing only costs the
            # cached copy.
            with contextlib.suppress(OSError, RepositoryError):  # the published files become the cached copy
                self._adopt(tmp, self.cache.version_path(scenario, version), key, files, MANIFEST_FILE, body)
            self._bound_cache(scenario, version, f"{scenario} v{version}")  # as a verify does
            draft.version, draft.manifest = version, manifest
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _next_number(self, scenario: str) -> int:
        """One past every number in use: published, torn (files without a manifest) or claimed."""
        name = validate_name(scenario)
        taken = [int(n) for n in self.store.children(name) if is_number(n)]
        taken += [int(n) for n in self.store.children(f"{name}/{CLAIMS_DIR}") if is_number(n)]
        return max(taken, default=0) + 1

    def _claim(self, scenario: str, first: int) -> int:
        for version in range(first, first + _MAX_CLAIM_TRIES):
            if self.store.create_bytes(f"{scenario}/{CLAIMS_DIR}/{version}", _claim_body()):
                return version
        raise RepositoryError(
            f"{scenario}: no free version number in {first}..{version} (claims under {CLAIMS_DIR}/)"
        )

    # ---- shared base encoders -----------------------------------------------------------
    def has_base(self, key: str, precision: str) -> bool:
        return self.store.exists(f"{self._base_key(key, precision)}/{BASE_INFO_FILE}")

    def base_folders(self, key: str) -> list[str]:
        """The folder names under `_bases/<key>/` in the store (one delimiter listing)."""
        return sorted(self.store.children(f"{BASES_DIR}/{validate_name(key, 'base key')}"))

    @contextlib.contextmanager
    def new_base(self, key: str, precision: str, **info: Any) -> Iterator[BaseDraft]:
        """Write a base once; if another writer claimed it first, ours is discarded (published False)
        once theirs is there: its `base.json` is waited for (LABELWISE_BASE_CLAIM_WAIT_S, 600 s), so that
        no version is sealed reading a base that does not exist yet; a claim whose base never comes (its
        writer died while uploading) is refused by name, nothing published."""
        target = self.cache.base_path(key, precision)
        tmp = draft_folder(target.parent)
        draft = BaseDraft(key=key, precision=precision, path=tmp, info=dict(info))
        try:
            yield draft
            files, body = sealed_base(draft)
            base_key = self._base_key(key, precision)
            claim = f"{BASES_DIR}/{key}/{CLAIMS_DIR}/{precision}"
            if self.has_base(key, precision):
                return  # another writer's, complete: theirs is kept
            if not self.store.create_bytes(claim, _claim_body()):
                self._await_base(key, precision, claim)
                return
            for rel in files:
                self.store.upload(tmp / rel, f"{base_key}/{rel}")
            if self.store.create_bytes(f"{base_key}/{BASE_INFO_FILE}", body):
                # Published: a local failure or a failed listing only costs the cached copy.
                with contextlib.suppress(OSError, RepositoryError):
                    self._adopt(tmp, target, base_key, files, BASE_INFO_FILE, body)
                draft.published = True
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _await_base(self, key: str, precision: str, claim: str) -> None:
        """Another writer holds the base's claim: wait until its base.json is there, else refuse."""
        wait_s = _base_claim_wait_s()
        deadline = time.monotonic() + wait_s
        while not self.has_base(key, precision):
            if time.monotonic() >= deadline:
                raise RepositoryError(
                    f"base encoder {key} {precision}: another writer claimed it ({self.root}/{claim}) but "
                    f"its {BASE_INFO_FILE} did not appear within {wait_s:g} s ({BASE_CLAIM_WAIT_ENV}); "
                    "nothing published. If that writer is gone, delete the claim object and export again"
                )
            time.sleep(min(1.0, max(0.05, wait_s / 20)))

    def _base_bytes(self, key: str, precision: str) -> bytes:
        try:
            return self.store.read_bytes(f"{self._base_key(key, precision)}/{BASE_INFO_FILE}")
        except FileNotFoundError:
            claim = f"{BASES_DIR}/{key}/{CLAIMS_DIR}/{precision}"
            being_written = (
                f" (claimed by a writer, {self.root}/{claim}: if none is running, delete that object)"
                if self.store.exists(claim)
                else ""
            )
            raise VersionNotFoundError(
                f"base encoder {key!r} has no {precision} export under {self.root}{being_written}"
            ) from None

    def base_info(self, key: str, precision: str) -> dict[str, Any]:
        return parse_base_info(self._base_bytes(key, precision), f"base encoder {key!r} {precision}")

    def verify_base(self, key: str, precision: str) -> dict[str, Any]:
        data = self._base_bytes(key, precision)
        info = parse_base_info(data, f"base encoder {key!r} {precision}")
        if info.get("schema_version") != SCHEMA_VERSION:
            raise SchemaVersionError(
                f"base encoder {key!r} {precision}: schema version {info.get('schema_version')!r}, "
                f"this code reads {SCHEMA_VERSION}"
            )
        what = f"base {key} {precision}"
        base_key = self._base_key(key, precision)
        # Before any download: a copy of another base's objects (another key or folder) is refused.
        check_base_identity(info, key, precision, f"{what} ({self.root}/{base_key})")
        try:
            files = {k: FileEntry(**v) for k, v in info["files"].items()}
        except (KeyError, TypeError, AttributeError, ValidationError) as exc:
            raise ManifestError(f"{what}: {BASE_INFO_FILE} has no valid 'files' table ({exc})") from exc
        for rel in files:
            if not is_contained(rel):
                raise UnsafePathError(
                    f"{what}: files key {rel!r} is not a relative path inside {self.root}/{base_key}"
                )
        listing = self._check_listing(base_key, files, BASE_INFO_FILE, what)
        target = self.cache.base_path(key, precision)
        cached = (base_key, target, files, BASE_INFO_FILE, data, listing, what)
        return self._cached(*cached, self.cache.verify_base, key, precision)


def _stamp(marker_bytes: bytes, files: dict[str, FileEntry], listing: dict[str, dict[str, Any]]) -> bytes:
    """What a cached copy was made from: its marker file's bytes and each object's ETag as listed."""
    etags = {rel: listing[rel].get("etag", "") for rel in sorted(files)}
    return json.dumps({"marker": marker_bytes.decode("latin-1"), "etags": etags}, sort_keys=True).encode()


def _stamp_name(stamp: bytes) -> str:
    """The name of the empty folder that stamps a cached copy: it holds no file, so the local checks (every
    file listed with a checksum) do not see it, and it moves with the copy in one rename."""
    return f"{_STAMP_PREFIX}{hashlib.sha256(stamp).hexdigest()}"


def _is_current(target: Path, marker: str, marker_bytes: bytes, stamp: str) -> bool:
    """Whether the copy at target carries this stamp and still holds the store's marker bytes."""
    try:
        return (target / stamp).is_dir() and (target / marker).read_bytes() == marker_bytes
    except OSError:
        return False


def _is_version(rel: str) -> bool:
    parts = rel.split("/")
    return len(parts) == 2 and is_version_name(parts[0])


def _stat_row(key: str, entry: dict[str, Any] | None) -> tuple:
    if entry is None:
        return (key, None, None, None)
    return (key, entry["size"], entry["etag"], entry["modified"])


def _discard(folder: Path) -> bool:
    """Move a cached folder out of the way, then delete it (a reader never sees it half-deleted). False
    when it was not there to move (another process of the node discarded it first)."""
    trash = folder.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
    try:
        os.rename(folder, trash)
    except OSError:
        return False
    shutil.rmtree(trash, ignore_errors=True)  # a leftover is a `.tmp-` draft: `labelwise doctor` lists it
    return True


def _touch(folder: Path) -> None:
    """Mark a cached copy as verified now (its folder's mtime: `_prune_cache` keeps the latest)."""
    now = time.time_ns()
    with contextlib.suppress(OSError):  # pruned by another process meanwhile: fetched again next time
        os.utime(folder, ns=(now, now))


__all__ = ["CACHE_ENV", "CACHE_KEEP_ENV", "ObjectStoreRepository", "default_cache_dir"]
