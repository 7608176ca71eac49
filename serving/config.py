"""The one typed configuration of the service, read from Serve YAML args and LABELWISE_* env vars."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from model_repository.errors import no_boolean_for_a_number, validation_problems
from model_repository.layout import is_number
from model_repository.passes import CPU_MAX_BATCH_TOKENS, MAX_BATCH_ROWS, MAX_INTRA_OP_THREADS

# False while a driver (`labelwise deploy`, `serve --address`) checks a config for a cluster: an object-store
# repository is then checked as a URL only; the replicas, which have the store's package and credentials,
# open it.
_open_object_store: ContextVar[bool] = ContextVar("labelwise_open_object_store", default=True)

# Ray counts a resource in units of 1/10000 (ray._raylet.RESOURCE_UNIT_SCALING) and refuses a nonzero float
# amount of less than one unit when the deployment is created (ray._common.ray_option_utils.
# _validate_resource_quantity: int(quantity * 10000) == 0, "cannot go beyond 0.0001").
RAY_RESOURCE_UNITS = 10000


@contextlib.contextmanager
def repository_url_only() -> Iterator[None]:
    """Within it, ServingConfig checks an object-store repository's URL syntax, without opening the store."""
    token = _open_object_store.set(False)
    try:
        yield
    finally:
        _open_object_store.reset(token)


def _number_as_text(value: Any) -> Any:
    """A version number written as a YAML / JSON number (`alias: 3`) as the text "3"; anything else (a
    boolean included) as it is, for the string check to refuse."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _servable_ref(ref: str) -> str:
    """An alias to serve: 'latest', a version number or a valid alias name (InvalidNameError's message)."""
    from model_repository import validate_name

    return ref if ref == "latest" or is_number(ref) else validate_name(ref, "alias")


class ScenarioSpec(BaseModel):
    """One scenario to serve, and which alias or version of it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str = Field(description="Scenario name in the model repository.")
    # In a ServingConfig, a scenario that names no alias gets its default_alias (below).
    alias: str = Field(default="production", description="Alias, 'latest' or a version number to serve.")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        """A name the repository cannot hold (capitals, spaces, '/') is refused here, not polled forever."""
        from model_repository import validate_name

        return validate_name(name)

    @field_validator("alias", mode="before")
    @classmethod
    def _alias_number(cls, alias: Any) -> Any:
        return _number_as_text(alias)

    @field_validator("alias")
    @classmethod
    def _valid_alias(cls, alias: str) -> str:
        return _servable_ref(alias)


BLANK_KEY = "is blank"
KEY_IN_WHITESPACE = "has whitespace or a newline around it"


def api_key_problem(key: str) -> str | None:
    """Why no request could carry `key` as `Authorization: Bearer <key>`, in words that never echo the key
    (it is a secret), or None for a sendable key. HTTP strips whitespace around a header value and refuses
    a newline in it, and a header is ASCII: the service refuses such a key in its config, the client at
    construction, both by this rule."""
    if not key.strip():
        return BLANK_KEY
    if key != key.strip():
        return KEY_IN_WHITESPACE
    at = next((i for i, c in enumerate(key) if not "!" <= c <= "~"), None)
    if at is not None:
        return f"character {at} is not printable ASCII (a space, a control character or a non-ASCII letter)"
    return None


def check_autoscaling_config(fields: dict[str, Any]) -> dict[str, Any]:
    """A Serve autoscaling_config (ServingConfig's, or a Serve config's `deployments` entry's) checked by
    Ray Serve's own AutoscalingConfig, as Ray would when the deployment is created; a key it does not know
    (which it would ignore) is refused too. ValueError saying why."""
    from .optional import require

    autoscaling = require("ray.serve.config").AutoscalingConfig
    unknown = sorted(set(fields) - set(autoscaling.model_fields))
    if unknown:
        raise ValueError(
            f"autoscaling_config: unknown key {', '.join(unknown)} (Ray Serve's keys: "
            f"{', '.join(sorted(autoscaling.model_fields))})"
        )
    try:
        autoscaling(**fields)
    except ValidationError as exc:
        raise ValueError(f"autoscaling_config: {validation_problems(exc)}") from None
    return fields


class ServingConfig(BaseSettings):
    """Everything a deployment needs. Field names are the keys of the Serve app's `args`."""

    # hide_input_in_errors: a refused api_key must not reach a replica's log (Ray logs the ValidationError
    # whole); every message still names the field and what it must be.
    model_config = SettingsConfigDict(
        env_prefix="LABELWISE_",
        env_nested_delimiter="__",
        extra="forbid",
        protected_namespaces=(),
        hide_input_in_errors=True,
        allow_inf_nan=False,  # an infinite timeout or Retry-After breaks later (math.ceil(inf)): refused here
    )

    repository: str = Field(
        default="./var/model-repository",
        description="Model repository root: a folder, or an object-store URL (s3://bucket/prefix; "
        "credentials and endpoint from the AWS_* variables), opened and checked here.",
    )
    scenarios: list[ScenarioSpec] | None = Field(
        default=None, description="Scenarios to serve; None serves every scenario with the default alias."
    )
    default_alias: str = Field(default="production", description="Alias served when a scenario names none.")
    default_scenario: str | None = Field(
        default=None,
        min_length=1,
        description="Scenario for requests that cannot name one (TEI's POST /predict without the "
        "X-Labelwise-Scenario header); None: the only scenario served, if there is exactly one.",
    )
    # batching
    max_batch_size: int = Field(default=MAX_BATCH_ROWS, ge=1, le=4096, description="Rows per batch, at most.")
    batch_wait_timeout_s: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="How long a free batch slot waits for more rows before it runs a batch that is not "
        "full (fewer than max_batch_size rows and, with pass_padding_tokens, room in max_batch_tokens for "
        "another row as wide). 0: it runs the rows waiting at once; rows that arrive while every slot is "
        "busy form the next batch (serving/batching.py).",
    )
    max_concurrent_batches: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Batch slots: batches a replica runs at once; each ORT pass "
        "uses ort_intra_op_threads, so 2 on a 1-thread replica uses up to 2 cores (docs/benchmarks.md).",
    )
    share_waiting_rows: bool = Field(
        default=False,
        description="A batch slot that starts while other slots are idle takes only its share of the "
        "rows waiting, and the idle slots run the rest at once (with one ORT thread per pass: data "
        "parallel on CPU cores). False: a free slot takes every row waiting (serving/batching.py).",
    )
    pass_padding_tokens: int | None = Field(
        default=8,
        ge=0,
        description="Passes by length: a batch slot takes the oldest row waiting and the waiting rows of "
        "its pass group closest to it in length, each only while the pass stays within max_batch_tokens "
        "and the row adds at most this many padded tokens (its own, or the other rows' when it widens the "
        "pass); the rest wait for the "
        "next free slot. 8 suits CPU replicas (a pass costs about its padded tokens plus ~10 tokens' "
        "worth of fixed work, docs/serving.md). None: a batch is every row waiting, in arrival order, cut "
        "into passes by length (GPU replicas, whose passes cost about the same for 1 row or 500).",
    )
    max_batch_tokens: int = Field(
        default=CPU_MAX_BATCH_TOKENS,
        ge=16,
        description="Token budget per ONNX pass (rows x padded length). 256 suits CPU replicas (int8 "
        "MiniLM: 1.75x the seq/s of 16384 for 32-text requests, docs/benchmarks.md); GPU replicas want "
        "large passes (helm/labelwise/values-gpu.yaml sets 65536). Export and `labelwise evaluate` score "
        "int8 graphs in passes cut the same way (model_repository.passes).",
    )
    # replicas and resources
    num_replicas: int | Literal["auto"] = Field(default=1, description="Fixed replicas, or 'auto'.")
    autoscaling_config: dict[str, Any] | None = Field(
        default=None, description="Ray Serve autoscaling_config; used when num_replicas is 'auto'."
    )
    num_cpus: float = Field(default=1.0, ge=0, description="CPUs reserved per classifier replica.")
    num_gpus: float = Field(default=0.0, ge=0, description="GPUs per classifier replica (fractions allowed).")
    max_ongoing_requests: int = Field(
        default=256,
        ge=1,
        description="API requests a replica admits at once; more are refused at once with "
        "backpressure_status_code in the error shape (probes are never counted).",
    )
    max_queued_requests: int = Field(default=1024, ge=-1, description="Per-handle queue cap; -1 unbounded.")
    # ONNX Runtime
    ort_intra_op_threads: int = Field(
        default=0,
        ge=0,
        le=MAX_INTRA_OP_THREADS,
        description="ORT intra-op threads per pass; 0: num_cpus' whole CPUs, at least 1 (ort_threads), not "
        "ORT's own default of every core the pod has.",
    )
    ort_providers: list[str] | None = Field(
        default=None,
        description="ORT execution providers in order; None picks CUDA when available, else CPU.",
    )
    precision: Literal["auto", "fp32", "fp16", "int8"] = Field(
        default="auto", description="auto: fp16 on GPU, int8 on CPU, falling back to fp32."
    )
    lora_mode: Literal["merged", "shared"] = Field(
        default="merged",
        description="merged: each LoRA scenario's merged graph; shared: one multi-adapter graph per base "
        "(rows of every LoRA scenario on it share one batch and one run).",
    )
    lora_table_rank: int = Field(
        default=8,
        ge=1,
        description="lora_mode shared: rank of the multi-adapter graph; adapters of higher rank are refused.",
    )
    # limits
    max_texts_per_request: int = Field(default=64, ge=1, description="Texts allowed in one request.")
    max_chars_per_text: int = Field(default=20000, ge=1, description="Characters allowed per text.")
    max_body_bytes: int | None = Field(
        default=None,
        ge=1024,
        description="Request body limit, answered 413 before parsing (from Content-Length, and while "
        "streaming); None sizes it from the text limits (every text at its longest, JSON-escaped).",
    )
    request_timeout_s: float = Field(
        default=30.0, gt=0, description="A classify request still unanswered after this is answered 504."
    )
    # deployment shape and overload answers
    ingress_mode: Literal["combined", "separate"] = Field(
        default="combined",
        description="combined: the FastAPI app runs on the classifier replica (measured faster on CPU, "
        "see docs/serving.md); separate: its own ingress deployment calling the classifier by handle.",
    )
    ingress_num_cpus: float = Field(default=0.5, ge=0, description="CPUs reserved for a separate ingress.")
    ray_metrics_export: bool = Field(
        default=True,
        description="Record the labelwise_* metrics through Ray's metrics agent too (ray_labelwise_*, every "
        "replica on every node) besides the replica's own /metrics. A local `labelwise serve` with one "
        "combined replica turns it off unless set: its /metrics already sees every request, and the "
        "second recording cost ~10 % of the request loop (docs/serving.md).",
    )
    backpressure_status_code: Literal[429, 503] = Field(
        default=503, description="Status of an overload refusal (max_ongoing_requests or Ray's queue full)."
    )
    retry_after_s: float = Field(default=1.0, ge=0, description="Retry-After sent with overload answers.")
    reload_poll_interval_s: float = Field(default=2.0, gt=0, description="How often replicas check aliases.")
    first_load_wait_s: float = Field(
        default=120.0,
        ge=0,
        description="How long a starting replica waits for its first load of every scenario before Ray Serve "
        "counts it running (and KubeRay an upgraded cluster ready): past it (or at 0) it comes up still "
        "loading, /readyz answering 503 until the load ends.",
    )
    health_check_period_s: float = Field(
        default=2.0,
        gt=0,
        description="How often Ray Serve checks each replica (a dead one, or one whose ONNX sessions fail, "
        "is replaced); short, because until Ray notices, a dead replica's traffic fails.",
    )
    api_key: str | None = Field(
        default=None,
        min_length=1,
        description="Bearer token required on /v1 and the compatibility routes when set (never empty); the "
        "health probes stay open.",
    )

    @field_validator("repository")
    @classmethod
    def _open_repository(cls, root: str) -> str:
        """An object-store root is opened here: a missing package, bucket or credentials fails at start
        (within repository_url_only, its URL is only parsed)."""
        from model_repository import ModelRepository, RepositoryError, is_object_store

        try:
            if is_object_store(root) and _open_object_store.get():
                ModelRepository(root)
        except RepositoryError as exc:
            raise ValueError(str(exc)) from exc
        return root

    @field_validator("scenarios")
    @classmethod
    def _some_distinct_scenarios(cls, specs: list[ScenarioSpec] | None) -> list[ScenarioSpec] | None:
        """An empty list would start a replica that reports ready with nothing to serve, and a name listed
        twice keeps only its last alias: both are refused (None serves every scenario)."""
        if specs is None:
            return None
        if not specs:
            raise ValueError(
                "scenarios is empty: list at least one scenario, or leave scenarios unset to serve every one"
            )
        names = [spec.name for spec in specs]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(
                f"scenarios lists {', '.join(twice)} more than once: list each scenario once, with the "
                "one alias to serve"
            )
        return specs

    @field_validator("default_alias", mode="before")
    @classmethod
    def _default_alias_number(cls, alias: Any) -> Any:
        return _number_as_text(alias)

    @field_validator("default_alias")
    @classmethod
    def _valid_default_alias(cls, alias: str) -> str:
        return _servable_ref(alias)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """`num_replicas: true` served one replica and `num_gpus: true` asked for a GPU."""
        return no_boolean_for_a_number(cls, value, info)

    @field_validator("num_replicas")
    @classmethod
    def _some_replicas(cls, replicas: int | str) -> int | str:
        if isinstance(replicas, int) and replicas < 1:
            raise ValueError(f"num_replicas {replicas}: use 1 or more, or 'auto'")
        return replicas

    @field_validator("num_cpus", "num_gpus", "ingress_num_cpus")
    @classmethod
    def _ray_resource_amount(cls, amount: float, info: ValidationInfo) -> float:
        if amount != 0 and int(amount * RAY_RESOURCE_UNITS) == 0:  # Ray refuses it once it has started
            raise ValueError(
                f"{info.field_name} {amount:g}: Ray refuses a nonzero resource amount below "
                f"{1 / RAY_RESOURCE_UNITS:g} (its smallest fraction); use 0 or {1 / RAY_RESOURCE_UNITS:g} "
                "or more"
            )
        return amount

    @field_validator("max_queued_requests")
    @classmethod
    def _queue_cap(cls, cap: int) -> int:
        if cap == 0:  # Ray Serve refuses 0 when the deployment is created, after Ray has started
            raise ValueError("max_queued_requests 0: use -1 (no limit) or 1 or more")
        return cap

    @field_validator("autoscaling_config")
    @classmethod
    def _ray_autoscaling(cls, fields: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if fields is None else check_autoscaling_config(fields)

    @field_validator("default_scenario")
    @classmethod
    def _a_listed_default(cls, name: str | None, info: ValidationInfo) -> str | None:
        """When scenarios are listed, default_scenario must be one of them: else every TEI or Infinity
        request that names no scenario is answered 404. A name no repository can hold is refused for the
        same reason, as a listed scenario's is."""
        from model_repository import validate_name

        if name is not None:
            validate_name(name, "default_scenario")
        listed = info.data.get("scenarios")
        if name is not None and listed is not None and name not in [spec.name for spec in listed]:
            names = ", ".join(spec.name for spec in listed) or "none"
            raise ValueError(
                f"default_scenario {name!r} is not in scenarios ({names}): list it there, or name one of them"
            )
        return name

    @model_validator(mode="after")
    def _autoscaling_with_auto_replicas(self) -> ServingConfig:
        """autoscaling_config applies only with num_replicas 'auto' (Ray refuses it beside a fixed
        number): refused here rather than dropped."""
        if self.autoscaling_config is not None and self.num_replicas != "auto":
            raise ValueError(
                f"autoscaling_config is set but num_replicas is {self.num_replicas}: set num_replicas to "
                "'auto' to autoscale, or remove autoscaling_config"
            )
        return self

    @model_validator(mode="after")
    def _default_alias_for_listed_scenarios(self) -> ServingConfig:
        """A listed scenario that names no alias serves default_alias (as every scenario does when none
        are listed)."""
        if self.scenarios is not None:
            self.scenarios = [
                spec
                if "alias" in spec.model_fields_set
                else spec.model_copy(update={"alias": self.default_alias})
                for spec in self.scenarios
            ]
        return self

    @property
    def ort_threads(self) -> int:
        """ONNX Runtime intra-op threads per pass: ort_intra_op_threads, else num_cpus' whole CPUs (at
        least 1)."""
        return self.ort_intra_op_threads or max(1, int(self.num_cpus))

    @field_validator("api_key")
    @classmethod
    def _no_blank_key(cls, key: str | None) -> str | None:
        """A key no request could send is refused at start, not met by 401s: HTTP strips whitespace
        around a header value and refuses a newline in it (a Secret made with --from-file keeps the
        file's trailing newline), and the two paths that compare it read non-ASCII bytes differently."""
        if key is None:
            return key
        problem = api_key_problem(key)
        if problem is None:
            return key
        if problem == BLANK_KEY:
            raise ValueError(f"api_key {problem}: set a real token, or leave it unset for an open API")
        if problem == KEY_IN_WHITESPACE:
            raise ValueError(
                f"api_key {problem}, which no Authorization header can carry: strip it (e.g. the trailing "
                "newline of a Secret made with kubectl --from-file: use --from-literal, or `printf %s key`)"
            )
        raise ValueError(
            f"api_key: {problem}: use a token of ASCII letters, digits and punctuation, e.g. hex or base64"
        )

    @property
    def body_limit_bytes(self) -> int:
        """max_body_bytes, or room for every text at its longest with each character JSON-escaped: 12
        bytes for a character outside the BMP, which JSON writes as a surrogate pair (`\\ud83d\\ude00`),
        as Python's json.dumps does by default."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return self.max_texts_per_request * (self.max_chars_per_text * 12 + 16) + 64 * 1024


class FileServingConfig(ServingConfig):
    """ServingConfig from the given fields alone, without this machine's LABELWISE_* variables: what a
    deploy file means wherever it runs (`labelwise deploy` checks a file with it before sending it)."""

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: Any, init_settings: Any, **_other: Any
    ) -> tuple[Any, ...]:
        return (init_settings,)
