"""Where a repository's bytes live: a local folder, or an object store reached through fsspec.

A root is a plain path, a `file://` URL (`file:///PATH` or `file://localhost/PATH`; both local), or an
object-store URL such as `s3://bucket/prefix` (s3fs) or `gs://bucket/prefix` (gcsfs). S3 credentials and
endpoint come from the standard AWS variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_SESSION_TOKEN`, `AWS_ENDPOINT_URL`, `AWS_PROFILE`, ...), read by botocore as for any AWS tool.

What the store must give (docs/artifacts.md, "Object storage"): strong read-after-write and list
consistency (AWS S3 since December 2020), a single PUT that replaces an object whole, and a conditional
PUT (`If-None-Match: *`) for the claim and marker objects that keep versions write-once. There is no
atomic rename: a version becomes visible when its marker, `manifest.json`, is written last.
"""

from __future__ import annotations

import importlib.util
import os
import random
import re
import time
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote

from .errors import (
    MissingStoragePackageError,
    ObjectStoreError,
    RepositoryURLError,
    UnsafePathError,
    UsageError,
)
from .layout import is_contained

_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+)://(?P<rest>.*)$")
# A URL that went through pathlib (typer's Path options, LABELWISE_REPOSITORY read into a Path, then
# str()) has lost one slash: `s3:/bucket/prefix`. Read as the URL: a local folder named `s3:` is not meant.
_COLLAPSED = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+):/(?P<rest>[^/].*)$")
_EXTRA = "pip install 'labelwise[object-store]'"
# A conditional PUT that meets another one in flight for the same key is answered 409
# ConditionalRequestConflict (AWS: "retry"): tried this many times in all, the waits doubling from
# _CONFLICT_WAIT_S (about 0.75 s in all), before the object is read back.
_CONFLICT_TRIES = 5
_CONFLICT_WAIT_S = 0.05


def parse_root(root: str | os.PathLike[str]) -> str | Path:
    """A local root as a Path (plain paths, `file://` URLs, percent-decoded), an object-store root as a
    normalised URL string."""
    text = os.fspath(root)
    if not text.strip():  # `LABELWISE_REPOSITORY=` or `-r ""`: not the current folder, silently
        raise UsageError(
            "the model repository is an empty string: pass -r PATH or URL, or set LABELWISE_REPOSITORY "
            "(unset it for ./var/model-repository)"
        )
    match = _SCHEME.match(text) or _COLLAPSED.match(text)
    if match is None:
        return Path(text)
    scheme, rest = match["scheme"].lower(), match["rest"]
    if scheme == "file":
        if match.re is _SCHEME:  # file://HOST/PATH: a host, if any, is this machine's name (RFC 8089)
            host, slash, rest = rest.partition("/")
            if host.lower() not in ("", "localhost"):
                raise RepositoryURLError(
                    f"repository URL {text!r} names the host {host!r}: a file:// root is a folder on this "
                    "machine; use file:///PATH (or file://localhost/PATH), or the folder's path"
                )
            rest = slash + rest
        rest = unquote(rest)  # its path is percent-encoded: Path.as_uri() writes a space as %20, é as %C3%A9
        return Path(rest if rest.startswith("/") else "/" + rest)
    # `s3://bucket//repo` (a `$PREFIX/` left empty) is `s3://bucket/repo`, as --repository reads it through
    # pathlib; kept, its keys began `/repo/...`, which the store's listings never show: published, never read.
    rest = re.sub("/{2,}", "/", rest).strip("/")
    if not rest:
        raise RepositoryURLError(f"repository URL {text!r} names no bucket: use {scheme}://BUCKET/PREFIX")
    return f"{scheme}://{rest}"


def is_object_store(root: str | os.PathLike[str] | None) -> bool:
    """Whether root names an object store (s3://, gs://, ...) rather than a local folder."""
    return root is not None and isinstance(parse_root(root), str)


S3_CONNECT_TIMEOUT_S = 10
S3_READ_TIMEOUT_S = 15


def _filesystem(scheme: str) -> Any:
    """The fsspec filesystem of a scheme; a missing package raises naming what to install."""
    if importlib.util.find_spec("fsspec") is None:
        raise MissingStoragePackageError(
            f"a {scheme}:// model repository needs fsspec and the store's package: {_EXTRA}"
        )
    import fsspec
    from fsspec.registry import known_implementations

    known = known_implementations.get(scheme)
    if known is None:
        names = ", ".join(sorted(s for s in known_implementations if len(s) > 1))
        raise RepositoryURLError(f"unknown repository URL scheme {scheme}://; fsspec knows: {names}")
    if scheme in {"http", "https"}:  # fsspec opens one, then asks it for "127.0.0.1:8000/x", not a URL
        raise RepositoryURLError(
            f"a {scheme}:// URL cannot be a model repository: a web server's files cannot be listed or "
            "written; use an object store, s3://BUCKET/PREFIX or gs://BUCKET/PREFIX, or a local folder"
        )
    package = known["class"].split(".", 1)[0]
    if importlib.util.find_spec(package) is None:
        hint = _EXTRA if package == "s3fs" else f"pip install {package}"
        raise MissingStoragePackageError(
            f"a {scheme}:// model repository needs the Python package {package!r}, which is not "
            f"installed: {hint}"
        )
    # No instance or listing cache: a replica polling for a new alias must see the store as it is now.
    if package != "s3fs":
        try:
            return fsspec.filesystem(scheme, skip_instance_cache=True, use_listings_cache=False)
        except (TypeError, ValueError, ImportError) as exc:  # ftp:// wants a host, github:// an org and repo
            raise RepositoryURLError(
                f"a {scheme}:// URL cannot be a model repository: its filesystem does not open from a "
                f"URL alone ({type(exc).__name__}: {exc}); use an object store, s3://BUCKET/PREFIX or "
                "gs://BUCKET/PREFIX, or a local folder"
            ) from None
    # s3fs tries each call 5 times, botocore each of those 5 times more, each read waiting 15 s: an endpoint
    # that accepts connections and never answers held every command (and a replica's poll) ~7 minutes.
    # Here s3fs's 2 tries alone (botocore's once each) of S3_READ_TIMEOUT_S: 30 s a call.
    fs = fsspec.filesystem(
        scheme,
        skip_instance_cache=True,
        use_listings_cache=False,
        config_kwargs={
            "connect_timeout": S3_CONNECT_TIMEOUT_S,
            "read_timeout": S3_READ_TIMEOUT_S,
            "retries": {"max_attempts": 1},
        },
    )
    fs.retries = 2  # s3fs's own tries around botocore's (its class default is 5)
    return fs


def _no_credentials(exc: BaseException) -> bool:
    return type(exc).__name__ in {"NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError"}


def _is_conflict(exc: BaseException) -> bool:
    """A 409 ConditionalRequestConflict anywhere in exc's chain: s3fs turns it into a plain OSError (EIO)
    whose text names the code and whose cause is botocore's ClientError with the response."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        if isinstance(response, dict):
            code = (response.get("Error") or {}).get("Code")
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            if code == "ConditionalRequestConflict" or status == 409:
                return True
        if "ConditionalRequestConflict" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _folder_marker(full: str, info: dict[str, Any]) -> bool:
    """A zero-byte `prefix/` object that S3 consoles, MinIO and sync tools make to show a folder."""
    key = str(info.get("Key") or info.get("name") or full)
    return (key.endswith("/") or full.endswith("/")) and int(info.get("size") or 0) == 0


def _entry(info: dict[str, Any]) -> dict[str, Any]:
    """Size, ETag and modification time of a listed object (S3 `LastModified`, GCS `updated`)."""
    return {
        "size": int(info.get("size") or 0),
        "etag": str(info.get("ETag") or info.get("etag") or info.get("md5Hash") or ""),
        "modified": str(info.get("LastModified") or info.get("updated") or info.get("mtime") or ""),
    }


class ObjectStore:
    """The objects under one repository URL, addressed by keys relative to it (`spam/3/manifest.json`).

    Every key is checked to stay under the root (UnsafePathError), so nothing a manifest or a listing
    names can reach another prefix of the bucket, nor a path outside a local folder it is copied into.
    """

    def __init__(self, url: str) -> None:
        scheme, _, rest = url.partition("://")
        self.url = url
        self.scheme = scheme
        self.fs = _filesystem(scheme)
        self._base = rest.strip("/")
        self.bucket = self._base.split("/", 1)[0]

    # ---- keys ------------------------------------------------------------------------------
    def key(self, relative: str) -> str:
        """The full path of a relative key, refused unless it stays under the root."""
        if relative == "":
            return self._base
        if not is_contained(relative):
            raise UnsafePathError(f"{self.url}: key {relative!r} leaves the repository root")
        return f"{self._base}/{relative}"

    def relative(self, full: str) -> str:
        """The key of a listed path relative to the root (listings give full paths)."""
        full = full.strip("/")
        if not full.startswith(self._base + "/"):
            raise UnsafePathError(f"{self.url}: listed object {full!r} is outside the repository root")
        return full[len(self._base) + 1 :]

    # ---- reads ------------------------------------------------------------------------------
    def check_access(self) -> None:
        """One listing of at most one key under the repository's prefix (what a prefix-scoped policy
        allows, whatever the bucket holds): refuse now, by name, a missing bucket, credentials or
        endpoint. An empty or absent prefix is a new, empty repository, not an error."""
        prefix = self._base[len(self.bucket) + 1 :]
        if hasattr(self.fs, "call_s3"):  # s3fs: ListObjectsV2, MaxKeys=1 (NoSuchBucket: FileNotFoundError)
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "MaxKeys": 1}
            if prefix:
                kwargs["Prefix"] = prefix + "/"
            self._call("open", lambda: self.fs.call_s3("list_objects_v2", **kwargs))
            return
        try:
            self._call("open-prefix", lambda: self.fs.ls(self._base, detail=False), missing_ok=True)
        except FileNotFoundError:  # nothing under the prefix yet, or no bucket: ask about the bucket
            self._call("open", lambda: self.fs.info(self.bucket))

    def exists(self, relative: str) -> bool:
        """Whether an object is there; a store error (access denied, endpoint down) raises, not False
        (fsspec's isfile answers False for any error)."""
        return self.stat(relative) is not None

    def read_bytes(self, relative: str) -> bytes:
        """The object's bytes; FileNotFoundError when there is none."""
        path = self.key(relative)
        return self._call(relative, lambda: self.fs.cat_file(path), missing_ok=True)

    def children(self, relative: str) -> list[str]:
        """Names directly under a prefix (objects and sub-prefixes); [] when there are none."""
        path = self.key(relative)
        try:
            listed = self._call(relative, lambda: self.fs.ls(path, detail=False), missing_ok=True)
        except FileNotFoundError:
            return []
        return sorted({PurePosixPath(self.relative(p)).name for p in listed if p.strip("/") != path})

    def files(self, relative: str) -> dict[str, dict[str, Any]]:
        """Every object under a prefix, by key relative to the prefix: {key: {"size": ..., "etag": ...}}."""
        path = self.key(relative)
        try:
            found = self._call(relative, lambda: self.fs.find(path, detail=True), missing_ok=True)
        except FileNotFoundError:
            return {}
        out = {}
        for full, info in found.items():
            if info.get("type") == "directory" or _folder_marker(full, info):
                continue
            rel = self.relative(full)
            if relative:
                rel = rel[len(relative) + 1 :] if rel.startswith(relative + "/") else rel
            out[rel] = _entry(info)
        return out

    def stat(self, relative: str) -> dict[str, Any] | None:
        """One object's {"size", "etag", "modified"} (a HEAD); None when there is none."""
        path = self.key(relative)
        try:
            info = self._call(relative, lambda: self.fs.info(path), missing_ok=True)
        except FileNotFoundError:
            return None
        return None if info.get("type") == "directory" else _entry(info)

    def download(self, relative: str, local: Path) -> None:
        path = self.key(relative)
        local.parent.mkdir(parents=True, exist_ok=True)
        self._call(relative, lambda: self.fs.get_file(path, str(local)), missing_ok=True)

    # ---- writes -----------------------------------------------------------------------------
    def put_bytes(self, relative: str, data: bytes) -> None:
        """One PUT: readers see the old object or the new one, never a mix."""
        path = self.key(relative)
        self._call(relative, lambda: self.fs.pipe_file(path, data))

    def create_bytes(self, relative: str, data: bytes) -> bool:
        """Write the object only if there is none (a conditional PUT); False when another writer's exists.

        A PUT whose response was lost is retried by the client and answered 412 by our own object: the
        object is read back, and when it holds exactly these bytes the write was ours (callers make their
        bytes unique: a claim names host, pid and time; a marker names its version). A 409
        ConditionalRequestConflict (another conditional PUT of the key in flight) is tried again a few
        times, then the object is read back the same way.
        """
        path = self.key(relative)
        conflict: ObjectStoreError | None = None
        for attempt in range(_CONFLICT_TRIES):
            try:
                self._call(relative, lambda: self.fs.pipe_file(path, data, mode="create"))
                return True
            except FileExistsError:
                break
            except ObjectStoreError as exc:
                # Another conditional PUT of this key was in flight (two publishers racing for a number):
                # AWS answers 409 and asks to retry; the retry meets the winner's object (412) or lands.
                if not _is_conflict(exc):
                    raise
                conflict = exc
                if attempt + 1 < _CONFLICT_TRIES:
                    time.sleep(_CONFLICT_WAIT_S * 2**attempt * random.uniform(0.5, 1.0))
        try:
            return self.read_bytes(relative) == data
        except FileNotFoundError:
            if conflict is not None:  # no object, yet every try conflicted: nothing was written
                raise ObjectStoreError(
                    f"{self.url}: {relative}: conditional PUT still answered 409 ConditionalRequestConflict "
                    f"after {_CONFLICT_TRIES} tries and no object is there; nothing was written: try again"
                ) from conflict
            return False

    def upload(self, local: Path, relative: str) -> None:
        path = self.key(relative)
        self._call(relative, lambda: self.fs.put_file(str(local), path))

    # ---- errors -----------------------------------------------------------------------------
    def _call(self, what: str, fn: Any, missing_ok: bool = False) -> Any:
        """Run one store call; turn the client's errors into ObjectStoreError naming the URL and key."""
        try:
            return fn()
        except FileNotFoundError as exc:
            if missing_ok and what != "open":
                raise
            if what == "open":  # a typo'd or never-made bucket is bad input, as a missing local folder is
                raise RepositoryURLError(
                    f"cannot open the model repository {self.url}: bucket {self.bucket!r} does not exist "
                    "(or these credentials cannot see it)"
                ) from exc
            raise ObjectStoreError(f"{self.url}: {what}: not found ({exc})") from exc
        except FileExistsError:
            raise
        except PermissionError as exc:
            raise ObjectStoreError(f"{self.url}: {what}: access denied ({exc})") from exc
        except Exception as exc:
            if _no_credentials(exc):
                raise ObjectStoreError(
                    f"no credentials for the model repository {self.url}: set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or a role the pod assumes), and AWS_ENDPOINT_URL "
                    f"for a store other than AWS S3 ({type(exc).__name__})"
                    if self.scheme in {"s3", "s3a"}
                    else f"no credentials for the model repository {self.url} ({type(exc).__name__}: {exc})"
                ) from exc
            raise ObjectStoreError(f"{self.url}: {what}: {type(exc).__name__}: {exc}") from exc


__all__ = ["ObjectStore", "is_object_store", "parse_root"]
