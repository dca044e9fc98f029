import importlib
import json
import pkgutil

import pytest

import infinito_iit
from infinito_iit.cli import main, train_main
from infinito_iit.errors import InfinitoError
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
    assert cfg["model"]["hidden_size"] == 32 and cfg["model"]["lambda_phi"] > 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert cfg["train"]["compile"] == "auto" and not metrics["compiled"]  # a short run trains eagerly
    assert metrics["compile_reason"].endswith("steps are too few to repay compiling, eager")
    # the table scores model.safetensors, the best validation's weights: it names their step
    evals = json.loads((run_dir / "history.json").read_text())["eval"]
    assert metrics["best_step"] == min(evals, key=lambda e: e["loss"])["step"] <= metrics["steps"]
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
        (["train", "--d-model", "30"], "hidden_size"),
        (["train", "--phi-target", "1.2"], "phi_target"),
    ],
)
def test_user_errors_exit_2_without_traceback(argv, message, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_compile_on_without_a_compiler_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    from lm_shared import runtime

    monkeypatch.setattr(runtime, "compile_backend", lambda device: None)
    assert main(["train", *TINY, "--compile", "on", "--out", str(tmp_path), "--run-name", "c"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: compile on: torch.compile cannot build kernels on cpu")
        and "--compile off" in err
    )
    assert not (tmp_path / "c").exists()


def test_bench_compile_without_a_compiler_is_one_line(tmp_path, monkeypatch, capsys):
    from lm_shared import runtime

    monkeypatch.setattr(runtime, "compile_backend", lambda device: None)
    assert main(["bench", "--compile", "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: --compile: torch.compile cannot build kernels on cpu") and err.count("\n") == 1
    )
    assert not (tmp_path / "b.json").exists()


def test_empty_corpus_and_resume_mismatch(run_dir, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    assert main(["train", *TINY, "--data", str(empty), "--out", str(tmp_path)]) == 2
    assert "empty" in capsys.readouterr().err
    before = (run_dir / "model.safetensors").read_bytes()
    assert main(["train", *TINY, "--resume", str(run_dir), "--n-layers", "2"]) == 2
    assert "num_layers: checkpoint has 1, requested 2" in capsys.readouterr().err
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
    saved = (out / "config.yaml").read_text(encoding="utf-8").splitlines()
    assert (
        "seeds: 2" in saved and "  hidden_size: 32" in saved and not any(x.startswith("out:") for x in saved)
    )
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


def test_train_help_describes_every_option(capsys):
    from infinito_iit.cli import build_parser

    assert options_without_help(build_parser()) == []
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "residual stream width (default: the --preset's)" in out and "(default: 300)" in out


# Every flag the argparse CLI accepted before its flags came from the config dataclasses (issue 17).
MODEL_FLAGS_BEFORE = (
    "--preset --d-model --n-layers --n-heads --d-ff --max-seq-len --dropout --lambda-phi --phi-target "
    "--noise-std --memory-slots --memory-writes --untied --baseline --no-memory --no-metrics "
    "--fixed-phi-weights --phi-components"
)
TRAIN_FLAGS_BEFORE = (
    "--data --tokenizer --vocab-size --seq-len --batch-size --grad-accum --lr --weight-decay --max-steps "
    "--eval-every --eval-batches --patience --precision --seed --proxy-k --devices --num-nodes --strategy "
    "--compile --threads"
)
FLAGS_BEFORE = {
    "train": f"{MODEL_FLAGS_BEFORE} {TRAIN_FLAGS_BEFORE} --out --run-name --resume --force",
    "evaluate": "--checkpoint --data --threads",
    "phi": "--checkpoint --data --threads --k --layer --sequences --bootstrap --seed --out",
    "generate": "--checkpoint --prompt --num-samples --max-new-tokens --temperature --top-k --top-p "
    "--repetition-penalty --no-repeat-ngram --penalty-alpha --greedy --seed --data --out --threads",
    "compare": f"{MODEL_FLAGS_BEFORE} {TRAIN_FLAGS_BEFORE} --seeds --out --no-dropout-study "
    "--no-param-match --proxy-bootstrap",
    "bench": f"{MODEL_FLAGS_BEFORE} --out --seq-len --batch-size --steps --threads --device --compile",
}


@pytest.mark.parametrize("command", sorted(FLAGS_BEFORE))
def test_each_commands_flags_and_defaults_are_its_dataclasses(command):

    from infinito_iit.cli import COMMANDS
    from lm_shared.config_cli import config_fields, flag_problems

    parser = COMMANDS[command].parser()
    fields = config_fields(parser)
    made = {option for field in fields for option in field.option_strings}
    assert set(FLAGS_BEFORE[command].split()) <= made  # every earlier spelling still works
    assert flag_problems(parser) == []  # every flag is a field, every default the field's
    assert options_without_help(parser) == []
    if command in ("evaluate", "phi", "generate"):  # the run folder stays positional, and is --run too
        run = [f for f in fields if f.dest == "run"]
        assert len(run) == 1 and "--run" in run[0].option_strings


def test_the_old_flags_give_the_same_configs():
    from infinito_iit.cli import COMMANDS, _train_config, build_model_config
    from infinito_iit.generate import DecodingConfig
    from infinito_iit.model import preset
    from infinito_iit.train import TrainConfig
    from lm_shared.config_cli import instantiate, parse

    argv = ["--preset", "small", "--untied", "--no-metrics", "--fixed-phi-weights", "--lambda-phi", "0.5",
            "--phi-components", "temporal,integration", "--n-layers", "2", "--lr", "3e-4",
            "--grad-accum", "2", "--compile"]  # fmt: skip
    parser = COMMANDS["train"].parser()
    cfg, given = parse(parser, argv)
    model = build_model_config(parser, cfg, given)
    # untyped model fields are the preset's; --no-metrics turns off what needs the metrics
    assert model == preset(
        "small",
        num_layers=2,
        tie_embeddings=False,
        iit_metrics=False,
        memory=False,
        lambda_phi=0.0,
        learnable_phi_weights=False,
        phi_components=("temporal", "integration"),
    )
    assert _train_config(parser, cfg, given) == TrainConfig(lr=3e-4, grad_accum=2, compile="on")
    # Configs saved when --compile was a switch still load; a value outside the choices is refused.
    assert TrainConfig(compile=False).compile == "off" and TrainConfig(compile=True).compile == "on"
    with pytest.raises(InfinitoError, match=r"compile=.yes.: expected auto \| on \| off"):
        TrainConfig(compile="yes")
    cfg, given = parse(parser, [])
    assert build_model_config(parser, cfg, given) == preset("cpu")  # memory_slots 128, not 256
    cfg, given = parse(parser, ["--baseline"])
    assert build_model_config(parser, cfg, given) == preset("cpu").baseline()
    parser = COMMANDS["generate"].parser()
    cfg, _ = parse(parser, ["run", "--greedy", "--no-repeat-ngram", "3"])
    assert instantiate(parser, cfg, DecodingConfig) == DecodingConfig(do_sample=False, no_repeat_ngram_size=3)


def test_the_run_saves_its_settings_and_config_loads_them(run_dir, tmp_path):
    from infinito_iit.cli import COMMANDS, _train_config, build_model_config
    from infinito_iit.model import InfinitoConfig
    from infinito_iit.train import TrainConfig
    from lm_shared.config_cli import parse

    saved = run_dir / "config.yaml"
    text = saved.read_text(encoding="utf-8")
    assert "  memory_slots: 8" in text.splitlines()
    assert not {line.split(":")[0] for line in text.splitlines()} & {"out", "run_name", "resume", "force"}
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    parser = COMMANDS["train"].parser()
    cfg, given = parse(parser, ["--config", str(saved), "--max-steps", "5", "--preset", "small"])
    model = build_model_config(parser, cfg, given)
    assert model == InfinitoConfig.from_dict({**config["model"], "vocab_size": model.vocab_size})
    assert _train_config(parser, cfg, given) == TrainConfig(**{**config["train"], "max_steps": 5})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--seq-len", "abc"], "error: argument --seq-len: invalid int value: 'abc'"),
        (["train", "--preset", "huge"], "error: argument --preset: invalid choice: 'huge'"),
        (
            ["train", "--phi-weight-init", "a,b"],
            "error: argument --phi-weight-init: expected comma-separated",
        ),
        (["generate", "run", "--bogus"], "error: unrecognized arguments: --bogus"),
        (["nope"], "error: expected a command, not 'nope'; choose from train, evaluate"),
    ],
)
def test_bad_flags_are_one_line_exit_2(capsys, argv, message):
    try:  # a flag's error exits from the parser; an unknown command returns
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


def test_a_trained_run_is_positional_or_run_and_its_absence_is_one_line(capsys):
    from infinito_iit.cli import COMMANDS
    from infinito_iit.configs import RunInput
    from lm_shared.config_cli import instantiate, parse

    for name in ("evaluate", "phi", "generate"):
        parser = COMMANDS[name].parser()
        positional = instantiate(parser, parse(parser, ["runs/a"])[0], RunInput)
        assert positional == instantiate(parser, parse(parser, ["--run", "runs/a"])[0], RunInput)
        assert str(positional.run) == "runs/a"
    assert main(["evaluate"]) == 2
    assert (
        capsys.readouterr().err.strip() == "error: name the trained run: infinito evaluate RUN (or --run RUN)"
    )


def test_compiled_bench_also_times_the_eager_models_and_rates_each_at_its_faster(monkeypatch):
    from infinito_iit import bench
    from infinito_iit.model import InfinitoConfig

    compiled = []
    monkeypatch.setattr(bench, "compile_module", lambda model, device: compiled.append(model) or model)
    tiny = InfinitoConfig(
        vocab_size=40, max_seq_len=16, hidden_size=16, num_layers=1, num_heads=2, memory_slots=8
    )
    configs = {"baseline": tiny.baseline(), "iit_full": tiny}
    timed = bench.measure_training(configs, 8, 2, 1, None, "cpu", compile=True, eager_too=("baseline",))
    assert set(timed) == {"baseline", "iit_full", "baseline_eager"} and len(compiled) == 2

    def steps(**seconds):
        return {name: {"median_step_s": s} for name, s in seconds.items()}

    fp32 = steps(baseline=1.2, baseline_eager=1.0, iit_full=1.1, iit_full_eager=1.5, iit_metrics_only=1.0)
    fp32.update(steps(iit_full_no_memory=1.0, iit_full_no_noise=1.0, iit_full_no_phi_loss=1.0))
    ratios = bench._overhead_ratios({"32-true": fp32})
    assert ratios["iit_overhead_ratio"] == pytest.approx(1.1 / 1.2)  # both compiled
    assert ratios["iit_overhead_ratio_best"] == pytest.approx(1.1 / 1.0)  # compiled IIT, eager baseline
    assert ratios["compile_speedup"] == pytest.approx({"baseline": 1.0 / 1.2, "iit_full": 1.5 / 1.1})
