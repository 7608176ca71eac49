"""Figures for docs/results.md: a briefly fine-tuned MiniLM (LoRA + head) on sentiment, exported, timed.

Bounded on purpose (2k training rows, one epoch, 2 CPU threads): the point is export parity and
ORT throughput on a model whose head is trained, not the best sentiment accuracy.

    python -m training.export.minilm_figures --repository var/export-figures
"""

from __future__ import annotations

import argparse
import csv
import random
import time
from pathlib import Path

from model_repository import BaseModelRef, ModelRepository, layout

from ..errors import BaseModelNotFoundError
from ..model import resolve_base_model
from ..publish import ADAPTER_DIR
from .bench import run_bench
from .exporter import export_into


def _rows(path: Path) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(fh) if r["text"]]
    return [r[0] for r in rows], [r[1] for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("var/export-figures"))
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared/data/sentiment"
    )
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--max-length-tokens", type=int, default=64)
    args = parser.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from tqdm import tqdm
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(2)
    torch.manual_seed(0)
    try:
        resolved = resolve_base_model("minilm")
    except BaseModelNotFoundError as exc:
        raise SystemExit(str(exc)) from exc
    base = resolved.path
    train_x, train_y = _rows(args.data / "train.csv")
    val_x, val_y = _rows(args.data / "validation.csv")
    labels = sorted(set(train_y))
    label2id = {v: i for i, v in enumerate(labels)}
    idx = random.Random(0).sample(range(len(train_x)), args.train_rows)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id
    )
    model = get_peft_model(
        model,
        LoraConfig(
            r=8,
            lora_alpha=16,
            target_modules=["query", "value"],
            modules_to_save=["classifier"],
            task_type="SEQ_CLS",
        ),
    )
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    model.train()
    start = time.perf_counter()
    for i in tqdm(range(0, len(idx), 16), desc="fine-tune (1 epoch)"):
        batch = idx[i : i + 16]
        enc = tokenizer(
            [train_x[j] for j in batch],
            padding=True,
            truncation=True,
            max_length=args.max_length_tokens,
            return_tensors="pt",
        )
        loss = model(**enc, labels=torch.tensor([label2id[train_y[j]] for j in batch])).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
    train_time_s = time.perf_counter() - start
    model.eval()

    repo = ModelRepository(args.repository)
    ref = BaseModelRef(id=str(base), content_hash=resolved.content_hash, architecture=resolved.architecture)
    with repo.new_version(
        "sentiment",
        strategy="lora",
        base_model=ref,
        labels=labels,
        max_length_tokens=args.max_length_tokens,
        train_time_s=train_time_s,
        training_config={
            "note": "export figures: 2k rows, 1 epoch, LoRA r=8",
            "validation_path": str(args.data / "validation.csv"),
        },
    ) as draft:
        tokenizer.save_pretrained(draft.path / layout.TOKENIZER_DIR)
        model.save_pretrained(draft.path / layout.WEIGHTS_DIR / ADAPTER_DIR)
        start = time.perf_counter()
        draft.fields.update(
            export_into(
                draft.path,
                model=model,
                tokenizer=tokenizer,
                strategy="lora",
                base_model=ref,
                base_model_path=base,
                precisions=["fp32", "int8"],
                parity_texts=val_x,
                parity_labels=val_y,
                max_length_tokens=args.max_length_tokens,
                repository=repo,
                parity_rows=len(val_x),
            )
        )
        print(f"export took {time.perf_counter() - start:.1f} s")
    manifest = draft.manifest
    print(manifest.model_dump_json(indent=2, exclude={"files", "training_config"}))
    for rel, entry in manifest.files.items():
        print(f"{rel}: {entry.size_bytes / 1e6:.2f} MB")
    run_bench(repo, "sentiment", manifest.version, args.data / "validation.csv", threads=2, rows=512)


if __name__ == "__main__":
    main()
