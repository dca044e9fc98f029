import importlib
import json
import pkgutil

import pytest

import infinito_iit
from infinito_iit.cli import main, train_main
from lm_shared.cli_help import options_without_help

TINY = [
    "--d-model",
    "32",
    "--n-layers",
    "1",
    "--n-heads",
    "2",
    "--max-seq-len",
    "32",
    "--seq-len",
    "32",
    "--vocab-size",
    "300",
    "--batch-size",
    "4",
    "--max-steps",
    "2",
    "--eval-every",
    "2",
    "--proxy-k",
    "3",
    "--memory-slots",
    "8",
]


def test_every_module_imports():
    for mod in pkgutil.iter_modules(infinito_iit.__path__):
        importlib.import_module(f"infinito_iit.{mod.name}")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", *TINY, "--out", str(out), "--run-name", "r"]) == 0
    return out / "r"


def test_train_then_generate_evaluate_phi(run_dir, tmp_path, capsys):
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["model"]["d_model"] == 32 and cfg["model"]["lambda_phi"] > 0
    assert main(["evaluate", str(run_dir)]) == 0
    report = tmp_path / "gen.json"
    args = ["generate", str(run_dir), "--num-samples", "2", "--max-new-tokens", "6", "--out", str(report)]
    assert main([*args, "--top-k", "4", "--penalty-alpha", "0.6"]) == 0
    data = json.loads(report.read_text())
    assert len(data["samples"]) == 2 and {"distinct_2", "seq_rep_4", "self_bleu", "longest_run"} <= set(
        data["generated"]
    )
    assert data["human"]["n_texts"] == 2
    phi = tmp_path / "phi.json"
    assert (
        main(["phi", str(run_dir), "--k", "3", "--sequences", "4", "--bootstrap", "3", "--out", str(phi)])
        == 0
    )
    assert set(json.loads(phi.read_text())["nulls"]) == {"time_shuffled", "shuffled_tokens", "random_init"}


def test_baseline_flag_turns_everything_off(tmp_path):
    assert train_main([*TINY, "--baseline", "--proxy-k", "0", "--out", str(tmp_path), "--run-name", "b"]) == 0
    model = json.loads((tmp_path / "b" / "config.json").read_text())["model"]
    assert (
        not model["iit_metrics"]
        and not model["memory"]
        and model["lambda_phi"] == 0
        and model["noise_std"] == 0
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--data", "/nonexistent/corpus.txt"], "/nonexistent/corpus.txt: no such file"),
        (["train", "--seq-len", "300"], "above the model's max_seq_len 128"),
        (["train", "--d-model", "30"], "d_model"),
        (["train", "--phi-target", "1.2"], "phi_target"),
    ],
)
def test_user_errors_exit_2_without_traceback(argv, message, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_empty_corpus_and_resume_mismatch(run_dir, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    assert main(["train", *TINY, "--data", str(empty), "--out", str(tmp_path)]) == 2
    assert "empty" in capsys.readouterr().err
    before = (run_dir / "model.safetensors").read_bytes()
    assert main(["train", *TINY, "--resume", str(run_dir), "--n-layers", "2"]) == 2
    assert "n_layers: checkpoint has 1, requested 2" in capsys.readouterr().err
    assert (run_dir / "model.safetensors").read_bytes() == before


def test_compare_writes_contract_keys_and_plots(tmp_path):
    out = tmp_path / "cmp"
    argv = ["compare", *TINY, "--seeds", "2", "--out", str(out), "--proxy-bootstrap", "2"]
    assert main(argv) == 0
    report = json.loads((out / "compare.json").read_text())
    for side in ("iit", "baseline"):
        assert isinstance(report[side]["bpb_mean"], float) and isinstance(report[side]["bpb_std"], float)
        assert len(report[side]["per_seed"]) == 2
    assert (
        abs(report["iit"]["parameters"] - report["baseline"]["parameters"]) / report["iit"]["parameters"]
        < 0.01
    )
    assert report["dropout_study"]["0.25"]["phi_weights_final"][0] is not None
    run = report["iit"]["per_seed"][0]
    assert run["phi_weight_trajectory"] and "phi" in run["phi_proxy"] and "distinct_2" in run["generation"]
    for png in ("loss_curves.png", "phi_weights.png", "phi_proxy.png"):
        assert (out / png).stat().st_size > 1000
    assert main(argv) == 2  # never overwrites an earlier comparison


def test_bench_writes_overhead_ratio(tmp_path):
    out = tmp_path / "bench.json"
    argv = [
        "bench",
        "--d-model",
        "32",
        "--n-layers",
        "1",
        "--n-heads",
        "2",
        "--max-seq-len",
        "32",
        "--memory-slots",
        "8",
    ]
    assert main([*argv, "--seq-len", "32", "--batch-size", "2", "--steps", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["iit_overhead_ratio"] > 0 and result["phi_proxy"]["k12"]["search"].startswith("exhaustive")
    from lm_shared.runtime import cpu_has_native_bf16

    assert ("bf16-mixed" in result["training"]) == cpu_has_native_bf16()
    assert result["generation"]["same_tokens"] and result["kv_cache_speedup"] > 0
    assert set(result["iit_overhead_split"]) == {"metrics_and_attention_stats", "memory", "noise", "phi_loss"}
    # Issue 16: profile split, counted FLOPs and MFU for the baseline and the full IIT model.
    assert result["matmul_peak_fp32_gflops"] > 0
    for name in ("baseline", "iit_full"):
        assert 0 < result[f"mfu_fp32_{name}"] < 1
        split = result[f"profile_{name}"]["split_fraction"]
        assert abs(sum(split.values()) - 1) < 0.02 and split["matmul"] > 0
    # The IIT model's explicit attention is counted, so it does at least the baseline's FLOPs.
    assert result["flops_per_step_iit_full"] >= result["flops_per_step_baseline"]


def test_ctrl_c_saves_a_resumable_checkpoint_and_exits_130_with_one_line(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    argv = list(TINY)
    argv[argv.index("--max-steps") + 1] = "400"
    cmd = [
        sys.executable,
        "-m",
        "infinito_iit.cli",
        "train",
        *argv,
        "--out",
        str(tmp_path),
        "--run-name",
        "r",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "r" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (log.is_file() and len(log.read_text().splitlines()) >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("SIGINT")]
    assert lines[-1].startswith("SIGINT: stopped at step") and "--resume" in lines[-1]
    assert "Traceback" not in err
    state = json.loads((tmp_path / "r" / "run.json").read_text())
    assert state["status"] == "interrupted" and (tmp_path / "r" / "checkpoints" / "last.ckpt").is_file()
    assert main(["train", "--resume", str(tmp_path / "r"), "--max-steps", str(state["step"] + 2)]) == 0
    steps = [json.loads(x)["step"] for x in (tmp_path / "r" / "grad_health.jsonl").read_text().splitlines()]
    assert steps == list(range(1, state["step"] + 3))  # true step numbers across the resume


def test_train_help_describes_every_option():
    from infinito_iit.cli import build_parser

    assert options_without_help(build_parser(), ("train",)) == []
