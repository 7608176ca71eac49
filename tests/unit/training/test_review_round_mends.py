"""Training defects found in review: a run that diverged after its best checkpoint is judged on that
checkpoint, not on the divergence; an architecture ORT's optimiser does not know is exported unoptimised;
LoRA finds the layers of encoders whose layer list is `layers`; the trained pooler learns at the head's
rate; frozen refuses the settings it ignores; parity and test rows are a seeded sample, not the first rows."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

# ---- 1. collapse is decided on the kept checkpoint -------------------------------------------------


class _DivergingTrainer:
    """A stand-in transformers Trainer: its validation macro-F1 peaks at 0.95 on step 4 (the checkpoint
    load_best_model_at_end keeps), then its loss climbs back and it answers the majority label (0.333)."""

    LOSSES = [0.69, 0.5, 0.3, 0.2, 0.15, 0.4, 0.6, 0.69, 0.69]
    EVALS = {4: 0.95, 6: 0.5, 8: 0.333}

    def __init__(self, callbacks: list, kept_logits: np.ndarray) -> None:
        self.callbacks, self.kept_logits = callbacks, kept_logits
        self.state = SimpleNamespace(log_history=[], global_step=0, epoch=0)
        self.model = SimpleNamespace(eval=lambda: None)

    def train(self) -> None:
        for step, loss in enumerate(self.LOSSES):
            self.state.log_history.append({"loss": loss, "step": step})
            self.state.global_step, self.state.epoch = step, step / 3
            if step in self.EVALS:
                m = {"eval_macro_f1": self.EVALS[step], "eval_selection": self.EVALS[step]}
                self.state.log_history.append({**m, "epoch": step / 3, "step": step})
                control = SimpleNamespace(should_training_stop=False)
                for callback in self.callbacks:
                    callback.on_evaluate(None, self.state, control, metrics=m)
                if control.should_training_stop:
                    break

    def predict(self, dataset) -> SimpleNamespace:
        return SimpleNamespace(predictions=self.kept_logits, metrics={"test_loss": 0.2})


def _diverging_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, toy_scenario, kept_learned: bool):
    import training.trainer as trainer_module
    from training import make_train_config
    from training.data import LabeledTexts, PreparedData

    val_ids = [0] * 10 + [1] * 10
    data = PreparedData(
        LabeledTexts(["x"] * 40, [0] * 30 + [1] * 10, "train"),
        LabeledTexts(["y"] * 20, val_ids, "val"),
        ["a", "b"],
        True,
    )
    if kept_learned:  # 19 of 20 right: macro-F1 0.95
        logits = np.array([[2.0, -2.0] if y == 0 else [-2.0, 2.0] for y in val_ids])
        logits[0] = [-2.0, 2.0]
    else:  # the kept checkpoint itself answers the majority label
        logits = np.array([[2.0, -2.0]] * len(val_ids))
    built: list[float] = []
    monkeypatch.setattr(trainer_module, "tokenize", lambda *a, **k: None)
    monkeypatch.setattr(trainer_module, "_make_trainer", lambda *a: _DivergingTrainer(a[8], logits))
    monkeypatch.setattr(
        trainer_module, "_build_model", lambda config, *a: built.append(config.params.learning_rate)
    )
    monkeypatch.setattr("transformers.set_seed", lambda seed: None)
    config = make_train_config(toy_scenario, "full", output_dir=tmp_path)
    job = trainer_module._Job(
        config,
        object(),
        None,
        data,
        trainer_module._ClassBalance(False, None, None),
        tmp_path,
        None,
        base=object(),
        collapse_restarts=2,
    )
    fitted = trainer_module._train_with_trainer(job)
    result = trainer_module.TrainedModel(
        fitted.config, None, None, None, data, fitted.metrics, 0, 0, 0.0, None
    )
    return fitted, result, built


def test_a_run_that_diverged_after_a_good_best_checkpoint_keeps_it_and_publishes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, toy_scenario
) -> None:
    from training.publish import _refuse_collapsed

    fitted, result, rebuilt = _diverging_run(monkeypatch, tmp_path, toy_scenario, kept_learned=True)
    assert fitted.metrics["macro_f1"] == pytest.approx(0.95, abs=0.01)
    assert not fitted.metrics.get("collapsed")
    assert "collapse_restarts" not in fitted.metrics
    assert rebuilt == []  # not retrained at a lower rate
    assert fitted.config.params.learning_rate == result.config.params.learning_rate
    _refuse_collapsed(result)  # publishable


def test_a_run_whose_kept_checkpoint_collapsed_still_restarts_and_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, toy_scenario
) -> None:
    from training import CollapsedRunError
    from training.publish import _refuse_collapsed

    fitted, result, rebuilt = _diverging_run(monkeypatch, tmp_path, toy_scenario, kept_learned=False)
    assert fitted.metrics["collapsed"]
    assert len(fitted.metrics["collapse_restarts"]) == 2 == len(rebuilt)
    assert all(
        r["stopped_at_step"] == 8 for r in fitted.metrics["collapse_restarts"]
    )  # where the watch stopped it
    with pytest.raises(CollapsedRunError):
        _refuse_collapsed(result)


# ---- 2. a model type ORT's optimiser does not know is exported unoptimised -------------------------


def test_an_architecture_ort_cannot_optimise_is_exported_unoptimised(
    tiny_roberta_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import onnx
    import torch
    from transformers import AutoTokenizer, Data2VecTextConfig, Data2VecTextForSequenceClassification

    from model_repository import BaseModelRef, layout
    from training.export import export_into

    tokenizer = AutoTokenizer.from_pretrained(tiny_roberta_dir)
    config = Data2VecTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_labels=2, max_position_embeddings=130, pad_token_id=tokenizer.pad_token_id,
        type_vocab_size=1,
    )  # fmt: skip
    torch.manual_seed(0)
    model = Data2VecTextForSequenceClassification(config).eval()
    version_dir = tmp_path / "version"
    with caplog.at_level("WARNING", logger="training.export.precisions"):
        fields = export_into(
            version_dir, model=model, tokenizer=tokenizer, strategy="full",
            base_model=BaseModelRef(id="d2v", content_hash="ab" * 8, architecture="data2vec-text"),
            precisions=["fp32", "fp16"], parity_texts=["good movie", "bad movie", "a film"],
            parity_labels=[0, 1, 0], max_length_tokens=32, say=lambda line: None,
        )  # fmt: skip
    assert "fp32: ORT cannot optimise model type 'data2vec-text'" in caplog.text
    assert "fp16: ORT fusions failed for model type 'data2vec-text'" in caplog.text
    assert [e["precision"] for e in fields["exports"]] == ["fp32", "fp16"]
    assert all(e["parity"]["verified"] for e in fields["exports"]), fields["exports"]
    fp32 = onnx.load(str(version_dir / layout.graph_file("fp32")))
    assert not {n.op_type for n in fp32.graph.node} & {"Attention", "SkipLayerNormalization"}  # unfused
    assert (version_dir / layout.graph_file("fp16")).is_file()


# ---- 3. LoRA finds the layers of an encoder whose layer list is `layers` ----------------------------


@pytest.fixture(scope="module")
def tiny_modernbert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer, 32-wide ModernBERT (its layers are `model.layers.N`), no tokenizer needed."""
    import torch
    from transformers import ModernBertConfig, ModernBertModel

    folder = tmp_path_factory.mktemp("tiny-modernbert")
    config = ModernBertConfig(
        vocab_size=200, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2,
        global_attn_every_n_layers=1,
    )  # fmt: skip
    torch.manual_seed(0)
    ModernBertModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


def test_lora_adapts_the_layers_of_an_encoder_whose_layer_list_is_named_layers(
    tiny_modernbert_dir: Path,
) -> None:
    from peft.tuners.lora import LoraLayer

    from training.export.heads import lora_arrays
    from training.model import build_model, outside_layers, resolve_base_model

    base = resolve_base_model(str(tiny_modernbert_dir))
    assert base.architecture == "modernbert"
    full = build_model(base, "full", ["a", "b"])
    assert sorted(outside_layers(full)) == ["classifier", "head.dense"]
    model = build_model(base, "lora", ["a", "b"], lora_r=4, lora_alpha=8, lora_target_modules=["Wqkv", "Wo"])
    adapted = sorted(n for n, m in model.named_modules() if isinstance(m, LoraLayer))
    assert adapted == [
        f"base_model.model.model.layers.{i}.{proj}"
        for i in (0, 1)
        for proj in ("attn.Wo", "attn.Wqkv", "mlp.Wo")
    ]
    arrays = lora_arrays(model)
    assert arrays is not None
    assert arrays["attn.Wqkv.layers"].tolist() == [0, 1] and arrays["attn.Wqkv.A"].shape == (2, 4, 32)


def test_layer_names_of_each_encoder_family_are_told_from_the_rest() -> None:
    from training.model import in_layers

    inside = [
        "roberta.encoder.layer.0.attention.self.query",  # BERT, RoBERTa, ELECTRA, DeBERTa
        "base_model.model.bert.encoder.layer.11.output.dense",
        "distilbert.transformer.layer.5.ffn.lin1",
        "model.layers.21.attn.Wqkv",  # ModernBERT
    ]
    outside = ["bert.pooler.dense", "classifier.dense", "classifier.out_proj", "head.dense", "classifier",
               "pre_classifier", "model.layers_norm.dense", "encoder.layer_norm"]  # fmt: skip
    assert all(in_layers(n) for n in inside)
    assert not any(in_layers(n) for n in outside)


# ---- 4. a LoRA run's trained pooler learns at the head's rate ---------------------------------------


@pytest.mark.parametrize("train_pooler", [True, False])
def test_a_trained_pooler_learns_at_the_head_learning_rate(tmp_path: Path, train_pooler: bool) -> None:
    from tests.unit.multi_adapter.conftest import build_tiny_bert
    from training.config import StrategyParams
    from training.model import build_model, resolve_base_model
    from training.trainer import head_optimizer

    base = resolve_base_model(str(build_tiny_bert(tmp_path / "tiny-bert", seed=3)))
    model = build_model(base, "lora", ["a", "b", "c"], lora_train_pooler=train_pooler)
    optimizer = head_optimizer(model, StrategyParams(learning_rate=1e-3, head_learning_rate=5e-3))
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    rates = {name: rate[id(p)] for name, p in model.named_parameters() if p.requires_grad}
    pooler = {n: lr for n, lr in rates.items() if ".pooler." in n}
    assert bool(pooler) is train_pooler
    assert set(pooler.values()) <= {5e-3}, pooler
    assert {lr for n, lr in rates.items() if "classifier" in n} == {5e-3}
    assert {lr for n, lr in rates.items() if "lora_" in n} == {1e-3}


# ---- 5. frozen refuses the settings it would ignore --------------------------------------------------


def _scenario_yaml(tmp_path: Path, toy_data_dir: Path, frozen_block: str) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(
        "name: toy\nlabels: [positive, negative, neutral]\n"
        f"train_file: {toy_data_dir / 'train.csv'}\nvalidation_file: {toy_data_dir / 'validation.csv'}\n"
        "strategies:\n  frozen:\n" + frozen_block,
        encoding="utf-8",
    )
    return path


def test_a_frozen_block_setting_what_frozen_ignores_is_refused_by_name(
    tmp_path: Path, toy_data_dir: Path
) -> None:
    from training import ScenarioConfigError, load_scenario, make_train_config

    block = (
        "    learning_rate: 0.001\n    warmup_ratio: 0.2\n    min_train_steps: 500\n"
        "    head_learning_rate: 0.01\n"
    )
    scenario = load_scenario(_scenario_yaml(tmp_path, toy_data_dir, block))
    with pytest.raises(ScenarioConfigError, match=r"strategies\.frozen sets min_train_steps, warmup_ratio, "
                       r"head_learning_rate, which are not used by the frozen strategy"):  # fmt: skip
        make_train_config(scenario, "frozen", output_dir=tmp_path / "run")
    with pytest.raises(ScenarioConfigError, match="max_train_epochs, which is not used"):
        make_train_config(
            load_scenario(_scenario_yaml(tmp_path, toy_data_dir, "    max_train_epochs: 50\n")),
            "frozen",
            output_dir=tmp_path / "run",
            max_length_tokens=64,  # a scenario override re-validates the scenario: refused before that
        )
    # the other strategies read their own blocks: this one's frozen settings do not concern them
    assert make_train_config(scenario, "full", output_dir=tmp_path / "run").strategy == "full"


def test_frozen_runs_of_defaults_and_recorded_configs_are_not_refused(
    tmp_path: Path, toy_data_dir: Path
) -> None:
    from training import load_scenario, make_train_config
    from training.config import ScenarioConfig

    used = "    learning_rate: 0.001\n    num_train_epochs: 50\n    batch_size: 32\n    weight_decay: 0.1\n"
    scenario = load_scenario(_scenario_yaml(tmp_path, toy_data_dir, used))
    config = make_train_config(scenario, "frozen", output_dir=tmp_path / "run", num_train_epochs=20)
    assert config.params.num_train_epochs == 20 and config.params.learning_rate == 0.001
    # re-read from a recorded config, the block lists every field at its default: not refused
    recorded = ScenarioConfig.model_validate(config.scenario.model_dump(mode="json"))
    make_train_config(recorded, "frozen", output_dir=tmp_path / "run")
    make_train_config(load_scenario("sentiment"), "frozen", output_dir=tmp_path / "run")


# ---- 6. parity and test rows are a seeded sample, not a file's first rows ---------------------------

# A validation file sorted by label, 600 rows: its first 512 are all 'positive'.
_SORTED = [("positive", 520), ("negative", 50), ("neutral", 30)]


def _sorted_rows() -> list[tuple[str, str]]:
    from tests.conftest import toy_sentences

    return [(t, label) for label, n in _SORTED for t in toy_sentences(label, n, seed=4)]


def test_publish_hands_every_validation_row_to_the_export_which_samples_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, toy_scenario
) -> None:
    import training.export
    from training import make_train_config
    from training.data import LabeledTexts, PreparedData
    from training.export.parity import sample_rows
    from training.publish import PARITY_ROWS, _export_onnx

    rows = _sorted_rows()
    labels = [label for label, _ in _SORTED]
    validation = LabeledTexts([t for t, _ in rows], [labels.index(name) for _, name in rows], "val")
    result = SimpleNamespace(
        config=make_train_config(toy_scenario, "full", output_dir=tmp_path),
        model=None,
        tokenizer=None,
        base=SimpleNamespace(
            id="b", revision=None, content_hash="ab" * 8, architecture="roberta", path=tmp_path
        ),
        data=PreparedData(validation, validation, labels, True),
    )
    seen: dict = {}
    monkeypatch.setattr(training.export, "export_into", lambda *a, **kw: seen.update(kw) or {})
    _export_onnx(result, object(), tmp_path / "version", ["fp32"])  # type: ignore[arg-type]
    assert seen["parity_texts"] == validation.texts and seen["parity_labels"] == validation.label_ids
    assert seen["parity_rows"] == PARITY_ROWS == 512
    _texts, checked = sample_rows(seen["parity_texts"], seen["parity_labels"], seen["parity_rows"])
    assert len(checked) == 512 and set(checked) == {0, 1, 2}  # every class, not the first 512 rows'


def test_reexport_checks_the_runs_validation_rows_as_publish_sampled_them(
    tmp_path: Path, tiny_roberta_dir: Path
) -> None:
    import json

    from tests.conftest import write_rows
    from training import custom_scenario, make_train_config
    from training.export.reexport import parity_rows

    rows = _sorted_rows()
    write_rows(tmp_path / "data" / "train.csv", rows)
    write_rows(tmp_path / "data" / "validation.csv", rows)
    scenario = custom_scenario("sorted", [label for label, _ in _SORTED], tmp_path / "data")
    config = make_train_config(scenario, "full", base_model=str(tiny_roberta_dir), output_dir=tmp_path / "r")
    source = SimpleNamespace(
        scenario="sorted", version=1, training_config=json.loads(config.model_dump_json()), metrics={}
    )
    texts, labels = parity_rows(source)  # type: ignore[arg-type]
    assert len(texts) == len(labels) == 600  # every row: the export samples PARITY_ROWS of them
    assert labels == [name for _, name in rows]


def test_test_rows_scored_at_export_are_a_seeded_sample_of_the_split(tiny_roberta_dir: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from training.export.exporter import _test_rows

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_roberta_dir, num_labels=3).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_roberta_dir)
    rows = _sorted_rows()[480:]  # 40 'positive', then 50 'negative' and 30 'neutral'
    texts, labels = [t for t, _ in rows], [[n for n, _ in _SORTED].index(name) for _, name in rows]
    first = _test_rows(model, tokenizer, texts, labels, 40, 32)
    assert len(first.gold) == 40 and set(first.gold.tolist()) == {0, 1, 2}
    again = _test_rows(model, tokenizer, texts, labels, 40, 32)
    assert first.gold.tolist() == again.gold.tolist() and first.torch == again.torch  # seeded
    assert len(_test_rows(model, tokenizer, texts, labels, 2000, 32).gold) == 120  # fewer: all of them


def test_lora_adapts_albert_whose_one_layer_is_shared_by_every_depth(tmp_path: Path) -> None:
    """ALBERT's `albert_layer_groups.0.albert_layers.0.attention.query` was taken for a module outside
    the layers, so every projection was excluded and `--lora-target-modules query,value` found none."""
    import torch
    from peft.tuners.lora import LoraLayer
    from transformers import AlbertConfig, AlbertModel

    from training.export.heads import lora_arrays
    from training.model import build_model, resolve_base_model

    config = AlbertConfig(
        vocab_size=100, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    AlbertModel(config).save_pretrained(tmp_path / "albert")
    base = resolve_base_model(str(tmp_path / "albert"))
    model = build_model(
        base, "lora", ["a", "b"], lora_r=4, lora_alpha=8, lora_target_modules=["query", "value"]
    )
    adapted = sorted(
        n.rsplit("albert_layers.0.", 1)[-1] for n, m in model.named_modules() if isinstance(m, LoraLayer)
    )
    assert adapted == ["attention.query", "attention.value"]
    # One layer serves every depth: the shared multi-adapter graph (one table row a depth) cannot hold it,
    # so lora_mode: shared refuses the version by name rather than adapting depth 0 alone.
    assert lora_arrays(model) is None
