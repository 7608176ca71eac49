"""Who a base encoder is: one content hash and one key, for the manifest and the `_bases/` folder."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from .errors import ManifestError
from .layout import NAME_PATTERN
from .manifest import BaseModelRef

# Folder names that say nothing about the model; the key takes the folder above them.
_GENERIC_NAMES = {"model", "models", "weights", "snapshots", "main", "base", "encoder"}


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of one file's bytes: the checksum of every manifest entry."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def weights_hash(folder: str | Path) -> str:
    """sha256 over a model folder's *.safetensors (else *.bin) files, names and bytes, in name order."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        raise ManifestError(f"base model folder {folder} holds no *.safetensors or *.bin weights")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


# Features whose bases keep the historic key without a suffix (published repositories hold them).
_UNSUFFIXED_FEATURES = {None, "first-token", "pooler"}
# A key is a folder name (layout.NAME_PATTERN): at most this many characters.
MAX_KEY_LENGTH = 64


def base_key(
    ref: BaseModelRef, base_model_path: str | Path | None = None, features: str | None = None
) -> str:
    """`<sanitised name>-<12 hex of revision or weights hash>`, e.g. all-minilm-l6-v2-3f2a1b0c9d8e.

    features: what the base graph outputs (heads.FEATURES_OF_KIND). Mean pooling gets its own key,
    `<...>-mean`: a model's mean-pooling base and its first-token or pooler base are different graphs.
    (One model has either a first-token or a pooler head, never both, so those two keep the plain key.)
    The name is cut at 48 characters, and shorter where the digest and the suffix would otherwise take the
    key past 64 (MAX_KEY_LENGTH, a folder name's limit); ManifestError when it still does not fit.
    """
    parts = [p for p in re.split(r"[\\/]", ref.id) if p]
    name = next(
        (p for p in reversed(parts) if p.lower() not in _GENERIC_NAMES), parts[-1] if parts else "base"
    )
    name = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    name = re.sub(r"^gt-", "", name)[:48] or "base"  # gt_ is the offline wheel's prefix, not the model
    digest = ref.revision or ref.content_hash
    if not digest:
        if base_model_path is None or not Path(base_model_path).is_dir():
            raise ManifestError(
                f"base model {ref.id!r} has neither a revision nor a content_hash, "
                "and no local folder to hash"
            )
        digest = weights_hash(base_model_path)
    cleaned = re.sub(r"[^a-z0-9]", "", digest.lower())
    if not cleaned:
        raise ManifestError(
            f"base model {ref.id!r}: revision/content_hash {digest!r} has no usable characters"
        )
    tail = f"-{cleaned[:12]}"
    if features not in _UNSUFFIXED_FEATURES:
        suffix = re.sub(r"[^a-z0-9]+", "-", str(features).lower()).strip("-")
        if not suffix:
            raise ManifestError(f"base model {ref.id!r}: features {features!r} has no usable characters")
        tail += f"-{suffix}"
    # The name gives way to the digest and the suffix. Only a key that would not fit is cut shorter: every
    # key that fits keeps its characters (a changed key would orphan the bases published under it).
    room = MAX_KEY_LENGTH - len(tail)
    if len(name) > room:
        name = name[: max(room, 0)].rstrip("-") or "base"
    key = f"{name}{tail}"
    if len(key) > MAX_KEY_LENGTH or not re.fullmatch(NAME_PATTERN, key):
        raise ManifestError(
            f"base model {ref.id!r}: its base key {key!r} ({len(key)} characters) is not a folder name of "
            f"at most {MAX_KEY_LENGTH} lowercase letters, digits, '-' or '_' (features {features!r})"
        )
    return key


__all__ = ["base_key", "file_sha256", "weights_hash"]
