"""Every file and folder name of a published version and of a shared base: defined here only.

A version folder::

    <root>/<scenario>/<version>/
        manifest.json                 what to serve and how to trust it (schema in manifest.py)
        tokenizer/tokenizer.json      the fast tokenizer (+ its config files)
        onnx/model.<precision>.onnx   full and merged-LoRA graphs, one per precision
        head.npz                      frozen / LoRA: the classifier head as numpy arrays (heads.py)
        lora.npz                      LoRA: the stacked adapter matrices (multi_adapter.py)
        weights/                      the torch weights training saved (re-export, evaluate)
    <root>/<scenario>/_aliases/<alias>.json     {"version": N}
    <root>/<scenario>/_claims/<N>               object stores: who took version number N (written first)
    <root>/_bases/<key>/<precision>/encoder.onnx              shared base encoder (frozen heads)
    <root>/_bases/<key>/multi-lora-r<rank>-<precision>/multi_adapter.onnx   shared LoRA graph
    <root>/_bases/<key>/<folder>/base.json                    what the base folder holds
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

MANIFEST_FILE = "manifest.json"
TOKENIZER_DIR = "tokenizer"
TOKENIZER_FILE = f"{TOKENIZER_DIR}/tokenizer.json"
ONNX_DIR = "onnx"
HEAD_FILE = "head.npz"
LORA_FILE = "lora.npz"
WEIGHTS_DIR = "weights"

ALIASES_DIR = "_aliases"
CLAIMS_DIR = "_claims"  # object stores only: a conditional PUT per version number keeps numbers unique
BASES_DIR = "_bases"
BASE_INFO_FILE = "base.json"
ENCODER_FILE = "encoder.onnx"
MULTI_ADAPTER_FILE = "multi_adapter.onnx"
# The shared base's every-MatMul-int8 graph, beside `int8/` (which keeps the sensitive nodes fp32):
# read by frozen versions published with int8_guard false.
ALL_INT8_FOLDER = "all-int8"
# A scenario, alias or folder name: lowercase, starts with a letter or digit, at most 64 characters.
NAME_PATTERN = (
    r"^[a-z0-9][a-z0-9_-]{0,63}$"  # Python: use with fullmatch ($ also matches before a final "\n")
)


def is_number(name: str) -> bool:
    """A version folder or claim name: ASCII digits only (str.isdigit also takes superscripts and other
    scripts' digits)."""
    return name.isascii() and name.isdigit()


def is_version_name(name: str) -> bool:
    """A version folder's (or prefix's) own name: the number as publish writes it, `str(N)` with N >= 1.
    `07` or `0` (a copy, a restore) is not one: version_path(7) is `7`, so listing `07` as v7 would name
    a version that cannot be read."""
    return is_number(name) and int(name) >= 1 and str(int(name)) == name


def graph_file(precision: str) -> str:
    """`onnx/model.int8.onnx`: a version's own graph in one precision, relative to the version folder."""
    return f"{ONNX_DIR}/model.{precision}.onnx"


MULTI_ADAPTER_PREFIX = "multi-lora-"


def is_multi_adapter_folder(name: str) -> bool:
    """Whether a folder under _bases/<key>/ holds a multi-adapter graph (multi_adapter_folder's names)."""
    return name.startswith(MULTI_ADAPTER_PREFIX)


def multi_adapter_folder(rank: int, precision: str) -> str:
    """`multi-lora-r8-fp32`: the folder under `_bases/<key>/` of the shared multi-adapter graph."""
    return f"{MULTI_ADAPTER_PREFIX}r{int(rank)}-{precision}"


_GRAPH_FOLDER = re.compile(rf"{re.escape(MULTI_ADAPTER_PREFIX)}r(\d+)-(\w+)")


def graph_rank(folder: str) -> int | None:
    """The table rank of a multi_adapter_folder name (`multi-lora-r16-fp32`: 16); None for another folder."""
    match = _GRAPH_FOLDER.fullmatch(folder)
    return int(match.group(1)) if match else None


def precision_of_folder(folder: str) -> str:
    """The precision a base folder holds: `fp32` for `fp32`, `int8` for `multi-lora-r8-int8`."""
    return folder.rsplit("-", 1)[-1]


def is_contained(relative: str) -> bool:
    """True when a manifest path stays inside its folder: relative, no `..`, no drive or root.

    Lexical only: the repository also resolves symlinks (repository.py) before trusting a path.
    """
    if not isinstance(relative, str) or not relative or "\\" in relative or "\x00" in relative:
        return False
    path = PurePosixPath(relative)
    return not path.is_absolute() and ".." not in path.parts


__all__ = [
    "ALIASES_DIR",
    "ALL_INT8_FOLDER",
    "BASES_DIR",
    "BASE_INFO_FILE",
    "CLAIMS_DIR",
    "ENCODER_FILE",
    "HEAD_FILE",
    "LORA_FILE",
    "MANIFEST_FILE",
    "MULTI_ADAPTER_FILE",
    "MULTI_ADAPTER_PREFIX",
    "NAME_PATTERN",
    "ONNX_DIR",
    "TOKENIZER_DIR",
    "TOKENIZER_FILE",
    "WEIGHTS_DIR",
    "graph_file",
    "graph_rank",
    "is_contained",
    "is_multi_adapter_folder",
    "is_number",
    "is_version_name",
    "multi_adapter_folder",
    "precision_of_folder",
]


def file_in_the_way(folder: Path) -> Path | None:
    """The file at `folder` or the nearest existing path above it, when that is a file (no folder can be
    made there); None when it is a folder or nothing exists. Lets a command refuse an output folder, or a
    working folder named by a variable, before its work rather than at its first mkdir."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def why_not_a_folder(folder: Path) -> str | None:
    """`folder` and why no folder can be made there ("X is a file, not a folder", "X is inside Y, which is a
    file, not a folder"), for a refusal that names the option or variable before it; None when one can."""
    blocking = file_in_the_way(folder)
    if blocking is None:
        return None
    what = "is" if blocking == folder else f"is inside {blocking}, which is"
    return f"{folder} {what} a file, not a folder"
