"""The manifest: everything needed to serve a version and to trust it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .layout import NAME_PATTERN
from .text import TextNormalization

SCHEMA_VERSION = 1

Strategy = Literal["full", "frozen", "lora"]
Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class FileEntry(_Strict):
    sha256: str = Field(description="Hex sha256 of the file's bytes.", pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0, description="File size in bytes.")


class BaseModelRef(_Strict):
    id: str = Field(description="Hub id or local path the encoder was loaded from.")
    revision: str | None = Field(default=None, description="Hub revision (commit) when known.")
    content_hash: str | None = Field(
        default=None, description="sha256 over the base weights, for local paths without a revision."
    )
    architecture: str | None = Field(default=None, description="HF model_type, e.g. roberta or bert.")


class Parity(_Strict):
    n_samples: int = Field(ge=0, description="Rows compared against the torch model.")
    max_abs_logit_diff: float | None = Field(description="Max |logit_onnx - logit_torch| over the rows.")
    agreement: float | None = Field(description="Share of rows with the same argmax as torch.")
    accuracy_delta: float | None = Field(default=None, description="ONNX accuracy minus torch accuracy.")
    verified: bool = Field(description="False when parity could not be checked on this machine.")
    note: str | None = None
    test_rows: int | None = Field(
        default=None, ge=0, description="Rows of the scenario's held-out test split this graph was scored on."
    )
    test_accuracy: float | None = Field(default=None, description="This graph's accuracy on the test rows.")
    test_macro_f1: float | None = Field(default=None, description="This graph's macro-F1 on the test rows.")
    quantization: str | None = Field(
        default=None,
        description="int8: how the graph was quantised, when the export's int8 guard had to choose (nodes "
        "kept fp32 and why); None: every MatMul quantised.",
    )


class ExportRecord(_Strict):
    precision: Precision
    path: str = Field(description="Path of the graph, relative to the version folder.")
    opset: int | None = None
    size_bytes: int = Field(ge=0)
    inputs: list[str] = Field(default_factory=list, description="Graph input names, in order.")
    parity: Parity | None = None


class BaseEncoderRef(_Strict):
    key: str = Field(description="Key of the shared base encoder under <root>/_bases/.")
    precisions: list[Precision] = Field(description="Precisions the base encoder was exported in.")
    folders: dict[Precision, Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(
        default_factory=dict,
        description="Folder under _bases/<key>/ of a precision whose graph is not that precision's default "
        "(all-int8: every MatMul int8, read by versions published with int8_guard false); a precision not "
        "listed reads the folder of its own name.",
    )

    def folder(self, precision: str) -> str:
        """The folder under _bases/<key>/ that this version reads for `precision`."""
        return self.folders.get(precision, precision)  # type: ignore[call-overload]

    def graph_folders(self) -> list[str]:
        """Every base folder this version reads, one per precision."""
        return [self.folder(p) for p in self.precisions]


class HeadSpec(_Strict):
    kind: Literal["roberta", "linear", "mean_mlp", "bert_pooler"] = Field(
        description="roberta: dense -> tanh -> out_proj on the first token; linear: one dense layer "
        "on the pooled output (BERT's pooler is part of the base encoder graph); bert_pooler: as roberta, "
        "the dense layer being a BERT pooler trained with the head (LoRA's lora_train_pooler); mean_mlp: L2 "
        "normalisation, dense -> ReLU -> out_proj on the attention-mask-weighted mean of the last hidden "
        "state (the frozen strategy's sentence embedding)."
    )
    path: str = Field(description="npz with the head weights, relative to the version folder.")


class Manifest(_Strict):
    schema_version: int = Field(default=SCHEMA_VERSION, description="Manifest schema version.")
    scenario: str
    version: int = Field(ge=1)
    parent_version: int | None = Field(default=None, description="Version this one was derived from.")
    strategy: Strategy
    base_model: BaseModelRef
    labels: list[str] = Field(min_length=2, description="Label names in logit order.")
    max_length_tokens: int = Field(gt=0)
    text_normalization: TextNormalization | None = Field(
        default=None,
        description="Cleaning applied to every text before tokenizing, in training, evaluation and "
        "serving alike; None (versions published before it was recorded) tokenizes the raw text.",
    )
    metrics: dict[str, Any] = Field(
        default_factory=dict,
        description="Validation metrics; `test` (when the scenario holds out a test split and the version "
        "was exported): the torch model's {rows, accuracy, macro_f1} on it and `int8_delta_vs_fp32`, "
        "scored in serving's passes; for frozen versions that delta and `served` ({precision: {accuracy, "
        "macro_f1}}) are the served path's (shared base encoder + head).",
    )
    files: dict[str, FileEntry] = Field(default_factory=dict, description="Every file but the manifest.")
    exports: list[ExportRecord] = Field(default_factory=list)
    base_encoder: BaseEncoderRef | None = None
    head: HeadSpec | None = None
    trainable_params: int | None = None
    total_params: int | None = None
    train_time_s: float | None = None
    training_config: dict[str, Any] = Field(default_factory=dict)
    code_revision: str = "unknown"
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    extra: dict[str, Any] = Field(default_factory=dict, description="Free-form notes (e.g. a tune summary).")

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, labels: list[str]) -> list[str]:
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be unique, got {labels}")
        return labels

    def named_paths(self) -> list[tuple[str, str]]:
        """(field, path) for every file path this manifest names, each relative to the version folder.

        A new path field must be added here: the repository refuses a version whose paths leave its
        folder, and checks only what this lists. (base_model.id and training_config name paths on the
        training machine, outside the repository by design; nothing reads them from a version folder.)
        """
        named = [("files key", rel) for rel in self.files]  # (the message adds the path)
        return named + [(field, rel) for field, rel in self.artifact_paths()]

    def artifact_paths(self) -> list[tuple[str, str]]:
        """(field, path) of the files serving opens by the name the manifest gives: graphs and head."""
        named = [(f"exports[{i}].path", e.path) for i, e in enumerate(self.exports)]
        if self.head is not None:
            named.append(("head.path", self.head.path))
        return named

    def export(self, precision: str) -> ExportRecord | None:
        return next((e for e in self.exports if e.precision == precision), None)
