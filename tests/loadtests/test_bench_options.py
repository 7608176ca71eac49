"""`labelwise bench` does what its options say, or refuses them in one line (exit 2): the LoRA-mode bench
honours --warmup-s and --threads and refuses what it cannot use; out-of-range values are usage errors; a
--url server's threads and config are not claimed in the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import loadtests.bench as bench
import loadtests.bench_lora as bench_lora
from labelwise.cli import app
from loadtests.bench_models import BenchModels
from loadtests.bench_report import render_markdown
from loadtests.ceiling import all_cores

from .conftest import TinyServer


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["bench", *args], env={"COLUMNS": "200"})


@pytest.fixture
def lora_runs(monkeypatch: pytest.MonkeyPatch) -> list[bench_lora.LoraBenchOptions]:
    """The options each `--lora-modes` run got (the run itself, minutes of serving, is stubbed)."""
    runs: list[bench_lora.LoraBenchOptions] = []

    def run(options: bench_lora.LoraBenchOptions, say: object = None) -> dict[str, Any]:
        runs.append(options)
        return {"points": [], "targets": {}, "json_path": "bench-lora.json"}

    monkeypatch.setattr(bench_lora, "run_lora_bench", run)
    return runs


@pytest.fixture
def main_runs(monkeypatch: pytest.MonkeyPatch) -> list[bench.BenchOptions]:
    """The options each main bench run got (stubbed, as above)."""
    runs: list[bench.BenchOptions] = []
    monkeypatch.setattr(bench, "run_bench", lambda options, say=None: runs.append(options))
    return runs


def test_lora_modes_honours_warmup_and_threads(lora_runs: list) -> None:
    assert _invoke("--lora-modes", "shared", "--warmup-s", "7", "--threads", "0", "--json").exit_code == 0
    assert _invoke("--lora-modes", "shared", "--json").exit_code == 0
    told, unset = lora_runs
    assert (told.warmup_s, unset.warmup_s) == (7.0, 2.0)
    # --threads 0: every core; unset: `labelwise serve`'s own default, as the help says.
    names = ["lora-mix-00"]
    assert bench_lora.serve_config(told, "shared", names)["ort_intra_op_threads"] == all_cores()
    assert "ort_intra_op_threads" not in bench_lora.serve_config(unset, "shared", names)


def test_lora_modes_refuses_the_options_it_cannot_use(lora_runs: list) -> None:
    out = _invoke(
        "--lora-modes", "shared", "--url", "http://127.0.0.1:9", "--serve-arg", "lora_table_rank=16",
        "--rounds", "2", "--rebuild-models", "--load-driver", "wrk",
    )  # fmt: skip
    assert out.exit_code == 2, out.output
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: --lora-modes (it starts its own servers")
    unread = "--url, --rebuild-models/--no-rebuild-models, --serve-arg, --load-driver, --rounds"
    assert line.endswith(f"does not use {unread}: drop them")
    assert lora_runs == []


def test_lora_scenarios_without_lora_modes_is_refused(main_runs: list) -> None:
    out = _invoke("--lora-scenarios", "1,8")
    assert out.exit_code == 2
    refusal = "error: the bench without --lora-modes does not use --lora-scenarios: drop them"
    assert out.stderr.strip() == refusal
    assert main_runs == []


OUT_OF_RANGE = [
    (["--duration-s", "0"], "error: --duration-s: Input should be greater than 0"),
    (["--warmup-s", "-1"], "error: --warmup-s: Input should be greater than or equal to 0"),
    (["--port", "70000"], "error: --port: Input should be less than or equal to 65535"),
    # The fp32 server would start on 65536, after the main loads: refused before anything runs.
    (
        ["--port", "65532"],
        "error: --port 65532: the bench also starts servers on ports up to 65536, past 65535; "
        "use a port up to 65531",
    ),
    (["--lora-modes", "shared", "--duration-s", "0"], "error: --duration-s: Input should be greater than 0"),
]


@pytest.mark.parametrize(("args", "message"), OUT_OF_RANGE)
def test_out_of_range_values_are_one_line_usage_errors(
    args: list[str], message: str, lora_runs: list, main_runs: list
) -> None:
    out = _invoke(*args)
    assert out.exit_code == 2
    assert out.stderr.strip() == message
    assert lora_runs == [] and main_runs == []


SERVE_ARGS_REFUSED = [
    ("max_batch_tokens=true", "error: --serve-arg: max_batch_tokens: max_batch_tokens true: a boolean where"),
    ("num_replicas=0", "error: --serve-arg: num_replicas:"),
    ("no_such_field=1", "error: --serve-arg: no_such_field: Extra inputs are not permitted"),
    ("scenarios=[]", "error: --serve-arg: scenarios is the bench's own (the bench repository and its"),
]


@pytest.mark.parametrize(("arg", "message"), SERVE_ARGS_REFUSED)
def test_serve_args_serve_would_refuse_are_refused_before_anything_runs(
    arg: str, message: str, main_runs: list
) -> None:
    """Checked as `labelwise serve` checks them, before the bench trains its models and starts servers."""
    out = _invoke("--serve-arg", arg)
    assert out.exit_code == 2
    assert out.stderr.strip().startswith(message)
    assert len(out.stderr.strip().splitlines()) == 1
    assert main_runs == []


def test_serve_args_serve_takes_are_kept_as_given() -> None:
    options = bench.BenchOptions(serve_overrides={"max_batch_tokens": 512, "lora_mode": "shared"})
    assert options.serve_overrides == {"max_batch_tokens": 512, "lora_mode": "shared"}


def _load(*_args: Any, **_kwargs: Any) -> dict[str, Any]:
    return {"requests": 10, "errors": 0, "error_kinds": {}, "req_per_s": 5.0, "seq_per_s": 5.0,
            "p50_ms": 10.0, "p99_ms": 20.0, "concurrency": 8, "client_cpu_share": 0.01,
            "driver": "python"}  # fmt: skip


def test_a_url_servers_threads_and_config_are_not_claimed(
    tiny_server: TinyServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--threads and --serve-arg never reach a server the bench did not start: the report says so."""
    models = BenchModels(repository=str(tmp_path), base_model="minilm", precision="int8", lora=["alpha"],
                         frozen=["beta"], train_steps=1)  # fmt: skip
    measured = {"seq_per_s": 100.0, "best_batch_size": 32, "variant": "1 process x 2 threads", "variants": []}
    # Stubbed: the training, the ceiling and each load's measurement (what takes minutes).
    monkeypatch.setattr(bench, "prepare_bench_models", lambda *_a, **_k: models)
    monkeypatch.setattr(bench, "ceiling", lambda *_a, **_k: measured)
    monkeypatch.setattr(bench, "run_one_load", _load)
    options = bench.BenchOptions(
        url=tiny_server.url, threads=3, serve_overrides={"max_batch_tokens": 4096}, out_dir=tmp_path,
        seed_baseline=False, scenario_mix=False, infinity=False, ceiling_bracket_s=0, load_driver="python",
    )  # fmt: skip
    report = bench.run_bench(options, say=lambda _msg: None)
    assert report["threads"] is None and report["serve_config"] is None
    assert report["url"] == tiny_server.url
    header = render_markdown(report).splitlines()[0]
    assert "thread(s)" not in header and f"the server at {tiny_server.url} (its own threads)" in header
