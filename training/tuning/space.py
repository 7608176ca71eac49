"""The hyperparameter search space a scenario YAML declares under `search_space:` (pydantic only)."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from model_repository.errors import no_boolean_for_a_number

# Parameters that StrategyParams holds as integers: Optuna must suggest ints for them.
INT_PARAMS = frozenset({"batch_size", "lora_r", "lora_alpha"})
LORA_PARAMS = frozenset({"lora_r", "lora_alpha", "lora_dropout"})
# The frozen head trains up to its configured epochs on cached embeddings and keeps the best one: a search
# over 1-3 epochs would only cut it short; and it has no warm-up (training/config.py FROZEN_UNUSED), so a
# warmup_ratio dimension would search nothing.
FROZEN_SKIPS = frozenset({"num_train_epochs", "warmup_ratio"})


class ParamRange(BaseModel):
    """One dimension: either `choices`, or `low`..`high` (optionally `log` and `step`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # `high: .inf` is no range to sample

    low: float | None = Field(default=None, description="Lower bound (inclusive).")
    high: float | None = Field(default=None, description="Upper bound (inclusive); must exceed low.")
    log: bool = Field(default=False, description="Sample uniformly in log space (needs low > 0).")
    step: float | None = Field(default=None, gt=0, description="Grid step inside low..high.")
    choices: list[float] | None = Field(default=None, description="A categorical set instead of a range.")

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """`step: true` was a step of 1 and `choices: [true, 4]` searched 1 and 4."""
        return no_boolean_for_a_number(cls, value, info)

    @model_validator(mode="after")
    def _well_formed(self) -> ParamRange:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("choices is empty")
            if len(set(self.choices)) != len(self.choices):
                raise ValueError(f"choices repeat a value: {self.choices}")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs both low and high (or use choices)")
        if self.low >= self.high:
            raise ValueError(f"empty or inverted range: low {self.low} >= high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        return self

    def values_are_ints(self) -> bool:
        values = self.choices if self.choices is not None else [self.low, self.high, self.step or 1]
        return all(float(v).is_integer() for v in values if v is not None)


class SearchSpace(BaseModel):
    """What `labelwise tune` searches; unset parameters keep the strategy's value. LoRA ones apply to lora."""

    model_config = ConfigDict(extra="forbid")

    learning_rate: ParamRange | None = Field(default=None, description="Peak AdamW learning rate.")
    weight_decay: ParamRange | None = Field(default=None, description="AdamW weight decay.")
    warmup_ratio: ParamRange | None = Field(default=None, description="Share of steps with warm-up.")
    batch_size: ParamRange | None = Field(default=None, description="Rows per training step (ints).")
    num_train_epochs: ParamRange | None = Field(default=None, description="Epochs over the train set.")
    lora_r: ParamRange | None = Field(default=None, description="LoRA rank (ints; lora only).")
    lora_alpha: ParamRange | None = Field(default=None, description="LoRA alpha (ints; lora only).")
    lora_dropout: ParamRange | None = Field(default=None, description="LoRA dropout (lora only).")

    @model_validator(mode="before")
    @classmethod
    def _known_names(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            unknown = sorted(set(raw) - set(cls.model_fields))
            if unknown:
                raise ValueError(
                    f"unknown search parameter(s) {unknown}: searchable are {list(cls.model_fields)}"
                )
        return raw

    @model_validator(mode="after")
    def _checked(self) -> SearchSpace:
        if not self.ranges():
            raise ValueError("the search space is empty: declare at least one parameter")
        for name in INT_PARAMS:
            spec = getattr(self, name)
            if spec is not None and not spec.values_are_ints():
                raise ValueError(f"{name} is an integer: its bounds, step or choices must be whole numbers")
        for name in ("weight_decay", "warmup_ratio", "lora_dropout"):
            spec = getattr(self, name)
            values = (spec.choices or [spec.low, spec.high]) if spec else []
            if any(v is not None and v < 0 for v in values):
                raise ValueError(f"{name} cannot be negative")
        for name in ("learning_rate", "batch_size", "num_train_epochs", "lora_r", "lora_alpha"):
            spec = getattr(self, name)
            values = (spec.choices or [spec.low]) if spec else []
            if any(v is not None and v <= 0 for v in values):
                raise ValueError(f"{name} must be positive")
        for name, spec in self.ranges().items():
            # A dimension with one value searches nothing: every trial would draw the same value, and
            # Optuna would still record it as a searched parameter (importances, the summary).
            if spec.choices is not None and len(spec.choices) < 2:
                raise ValueError(
                    f"{name}: choices {spec.choices} hold one value, which cannot vary: give at least "
                    f"2 choices, or leave {name} out of the search space to keep the strategy's value"
                )
            step = spec.step if spec.step is not None else (1 if name in INT_PARAMS else None)
            if step is None or spec.low is None or spec.high is None:
                continue
            # isclose: 0.1 + 0.2 lands a hair above 0.3, yet the grid 0.1, 0.3 holds two values.
            if spec.low + step > spec.high and not math.isclose(spec.low + step, spec.high):
                raise ValueError(
                    f"{name}: low {spec.low:g} + step {step:g} exceeds high {spec.high:g}, so the range "
                    f"holds one value and cannot vary: widen it or shrink the step"
                )
        return self

    def ranges(self, strategy: str | None = None) -> dict[str, ParamRange]:
        """The declared dimensions, without the LoRA ones unless the strategy is lora (or None), and
        without epochs for frozen (its head keeps its best epoch of many)."""
        out = {name: spec for name in type(self).model_fields if (spec := getattr(self, name)) is not None}
        if strategy is not None and strategy != "lora":
            out = {k: v for k, v in out.items() if k not in LORA_PARAMS}
        if strategy == "frozen":
            out = {k: v for k, v in out.items() if k not in FROZEN_SKIPS}
        return out

    def suggest(self, trial: Any, strategy: str) -> dict[str, Any]:
        """Ask an Optuna trial for one value per dimension."""
        values: dict[str, Any] = {}
        for name, spec in self.ranges(strategy).items():
            as_int = name in INT_PARAMS
            if spec.choices is not None:
                choices = [int(c) for c in spec.choices] if as_int else list(spec.choices)
                values[name] = trial.suggest_categorical(name, choices)
            elif as_int:
                values[name] = trial.suggest_int(
                    name, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log
                )
            else:
                values[name] = trial.suggest_float(name, spec.low, spec.high, step=spec.step, log=spec.log)
        return values


def default_search_space() -> SearchSpace:
    """Used when a scenario declares none: the seed article's dimensions, sized for CPU runs."""
    return SearchSpace.model_validate(
        {
            "learning_rate": {"low": 1e-5, "high": 3e-3, "log": True},
            "weight_decay": {"low": 0.0, "high": 0.1},
            "batch_size": {"choices": [8, 16, 32]},
            "num_train_epochs": {"low": 1, "high": 3, "step": 1},
            "lora_r": {"choices": [4, 8, 16]},
            "lora_alpha": {"choices": [8, 16, 32]},
        }
    )
