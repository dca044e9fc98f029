import dataclasses
import json
from pathlib import Path

import pytest

from nanologic.cli import main, train_main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    # 12 steps with validation every half epoch (~8 steps): training must go on after a
    # mid-epoch validation, which breaks if the schedule-free optimizer is left in eval mode.
    args = "--preset tiny --n-generate 400 --max-steps 12 --val-check-interval 0.5 --eval-limit 12"
    args += " --threads 1 --batch-size 16 --vocab-size 600"
    code = train_main([*args.split(), "--out", str(out)])
    assert code == 0
    return out


def test_default_run_layout_and_report(run_dir):
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    assert 0.0 <= report["equivalence_accuracy"] <= 1.0
    n_test_split = len((run_dir / "data" / "test.jsonl").read_text(encoding="utf-8").splitlines())
    assert n_test_split > 0 and report["n_test"] == min(12, n_test_split)  # --eval-limit 12
    for name in ("report.md", "accuracy.png", "confusion.png", "predictions.jsonl"):
        assert (run_dir / "eval" / name).exists()
    for name in ("model.safetensors", "model_config.json", "train_config.json", "tokenizer/tokenizer.json"):
        assert (run_dir / name).exists()
    assert list((run_dir / "checkpoints" / "phase2").glob("*val_loss*.ckpt"))
    assert set(report["by_complexity"]) <= {"simple", "intermediate", "advanced"}
    # Issue 13: every run reports grounded accuracy on the real-sentence development set too.
    assert report["dev_real"]["n_test"] == 12  # --eval-limit bounds the real-sentence set too
    assert 0.0 <= report["dev_real"]["grounded_accuracy"] <= 1.0
    assert (run_dir / "eval-dev_real" / "report.json").exists()
    # ... decoded under the grounded grammar (the default), and freely for comparison
    assert report["constraint"] == "grounded"
    free = json.loads((run_dir / "eval-dev_real-free" / "report.json").read_text())
    assert free["constraint"] is None and free["n_test"] == report["dev_real"]["n_test"]
    assert report["dev_real_free"]["grounded_accuracy"] == free["grounded_accuracy"]
    # test clauses are unseen in train (issue 13), and the report says so
    assert report["clause_overlap"]["clauses"] > 0 and report["clause_overlap"]["clauses_in_train"] == 0


def test_refuses_to_overwrite_a_trained_run(run_dir, capsys):
    assert train_main(["--preset", "tiny", "--out", str(run_dir)]) == 2
    assert "holds a finished run" in capsys.readouterr().err


def test_formalize_single_and_batch(run_dir, tmp_path, capsys):
    assert main(["formalize", "--checkpoint", str(run_dir), "Si llueve, me mojo."]) == 0
    assert "fórmula" in capsys.readouterr().out
    src = tmp_path / "in.jsonl"
    src.write_text(
        '{"input": "Si llueve, me mojo.", "id": 7}\n{"input": "No hay backup."}\n', encoding="utf-8"
    )
    dst = tmp_path / "out.jsonl"
    assert main(["formalize", "--checkpoint", str(run_dir), "--input", str(src), "--output", str(dst)]) == 0
    rows = [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2 and rows[0]["id"] == 7 and rows[0]["input"] == "Si llueve, me mojo."
    for row in rows:
        assert isinstance(row["atoms"], dict) and isinstance(row["connectors"], list)
        assert isinstance(row["formula"], str) and isinstance(row["formula_ascii"], str)


def test_formalize_bad_jsonl_names_file_and_line(run_dir, tmp_path, capsys):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"input": "Llueve."}\n{"input": \n', encoding="utf-8")
    dst = tmp_path / "out.jsonl"
    assert main(["formalize", "--checkpoint", str(run_dir), "--input", str(src), "--output", str(dst)]) == 2
    assert f"{src}:2" in capsys.readouterr().err
    assert not dst.exists()
    src.write_text('{"text": "Llueve."}\n', encoding="utf-8")
    assert main(["formalize", "--checkpoint", str(run_dir), "--input", str(src), "--output", str(dst)]) == 2
    assert "field 'input'" in capsys.readouterr().err


def test_missing_or_incompatible_checkpoint(tmp_path, capsys):
    assert main(["formalize", "--checkpoint", str(tmp_path / "nope"), "Llueve."]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["formalize", "--checkpoint", str(tmp_path), "Llueve."]) == 2
    assert "not a nanologic run" in capsys.readouterr().err
    # a run stopped before its weights were written (a new user's Ctrl-C) says how to go on
    (tmp_path / "run.json").write_text('{"package": "nanologic", "status": "interrupted", "step": 380}')
    for command in ("formalize", "evaluate"):
        assert main([command, "--run", str(tmp_path), *(["Llueve."] if command == "formalize" else [])]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (
            f"error: {tmp_path}: the run is interrupted, its weights not written yet; "
            f"continue it with `nanologic train --out {tmp_path} --resume`"
        )


def test_check_with_model_runs(run_dir, capsys):
    code = main(["check", "--checkpoint", str(run_dir), "Si llueve, me mojo. Me mojo. Por lo tanto, llueve."])
    assert code in (0, 2)  # an untrained model may write an unparsable formula: a clear error


def test_check_formulas_without_model(capsys):
    assert main(["check", "--premise", "p -> q", "--premise", "q", "--conclusion", "p", "--json"]) == 0
    out = capsys.readouterr().out
    assert "afirmación del consecuente" in out and "contraejemplo" in out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["valid"] is False and result["counterexample"] == {"p": False, "q": True}
    assert main(["check", "--premise", "p -> (q", "--conclusion", "p"]) == 2
    assert "position" in capsys.readouterr().err


def test_export_refuses_qk_norm(run_dir, tmp_path, capsys):
    out = tmp_path / "m.gguf"
    assert main(["export-gguf", "--checkpoint", str(run_dir), "--out", str(out)]) == 2
    assert "QK-norm" in capsys.readouterr().err and not out.exists()


def test_unknown_option_exits_nonzero():
    with pytest.raises(SystemExit) as info:
        main(["formalize", "--bogus"])
    assert info.value.code == 2


def test_data_stages_chain(tmp_path, capsys):
    raw, clean_, ver, aug, proc = (
        tmp_path / n for n in ("raw.json", "clean.json", "ver.json", "aug.json", "proc")
    )
    assert main(["generate", "--n", "300", "--out", str(raw)]) == 0
    assert main(["clean", str(raw), "--out", str(clean_)]) == 0
    assert main(["verify", str(clean_), "--out", str(ver)]) == 0
    assert main(["augment", str(ver), "--out", str(aug)]) == 0
    assert main(["preprocess", str(aug), "--out", str(proc)]) == 0
    assert (
        main(["train-tokenizer", "--data", str(proc), "--out", str(tmp_path / "tok"), "--vocab-size", "500"])
        == 0
    )
    from lm_shared.tokenization import BPETokenizer

    tok = BPETokenizer.load(tmp_path / "tok" / "tokenizer.json")
    assert [tok.id_to_token(i) for i in range(3)] == ["<|pad|>", "<|bos|>", "<|eos|>"]
    assert tok.token_to_id("<|formula|>") == 9
    # refuses to overwrite
    assert main(["generate", "--n", "10", "--out", str(raw)]) == 2


@pytest.mark.parametrize(("symbolic_share", "comma_less_share"), [(0.0, 0.3), (0.4, 0.0)])
def test_train_and_the_stage_commands_write_the_same_files(
    tmp_path, capsys, symbolic_share, comma_less_share
):
    # Issue 17 item 4: one driver (nanologic.stages) for `train`'s embedded dataset and the stage
    # subcommands; with the same settings they write the same files, byte for byte.
    from nanologic.configs import DatasetConfig
    from nanologic.stages import STAGE_FILES, build_dataset

    config = DatasetConfig.for_training(
        n_generate=400,
        max_per_complexity=60,
        seed=3,
        symbolic_share=symbolic_share,
        comma_less_share=comma_less_share,
    )
    build_dataset(tmp_path / "train", config)
    cli = tmp_path / "cli"
    raw, cleaned, verified, augmented = (cli / STAGE_FILES[s] for s in STAGE_FILES)
    seed = ["--seed", "3"]
    share = ["--symbolic-share", str(symbolic_share), "--comma-less-share", str(comma_less_share)]
    assert main(["generate", "--n", "400", *seed, *share, "--out", str(raw)]) == 0
    assert main(["clean", str(raw), "--out", str(cleaned), *seed]) == 0
    assert main(["verify", str(cleaned), "--out", str(verified)]) == 0
    assert main(["augment", str(verified), "--out", str(augmented), "--kinds", "composition", *seed]) == 0
    assert main(["preprocess", str(augmented), "--out", str(cli), "--max-per-complexity", "60", *seed]) == 0
    names = [*STAGE_FILES.values(), "train.jsonl", "val.jsonl", "test.jsonl", "stats.json"]
    assert sorted(p.name for p in cli.iterdir()) == sorted(names)
    for name in names:
        assert (tmp_path / "train" / name).read_bytes() == (cli / name).read_bytes(), name


def test_every_commands_flags_come_from_its_dataclasses():
    # Issue 17 item 1: each default exists once, in nanologic.configs; the flags only rename.
    from lm_shared.config_cli import flag_problems
    from nanologic.cli import COMMANDS, command_parser

    for name in COMMANDS:
        assert flag_problems(command_parser(name)) == [], name


def test_the_augmentation_kinds_are_the_pipelines():
    from nanologic.configs import AUGMENTATION_KINDS
    from nanologic.pipeline import REWRITES

    assert AUGMENTATION_KINDS == (*REWRITES, "composition")


def test_malformed_raw_json_names_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"examples": [\n  {"a": 1},\n  {"b": }\n]}\n', encoding="utf-8")
    assert main(["clean", str(bad), "--out", str(tmp_path / "o.json")]) == 2
    assert f"{bad}:3" in capsys.readouterr().err


def test_train_on_an_existing_data_dir_writes_its_own_report(run_dir, tmp_path):
    out = tmp_path / "second"
    args = "--preset tiny --max-steps 2 --eval-limit 3 --threads 1 --batch-size 16"
    assert train_main([*args.split(), "--data", str(run_dir / "data"), "--out", str(out)]) == 0
    assert json.loads((out / "eval" / "report.json").read_text())["n_test"] == 3


def test_evaluate_another_split_keeps_the_test_report(run_dir, capsys):
    test_report = (run_dir / "eval" / "report.json").read_bytes()
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(run_dir),
                "--data",
                str(run_dir / "data" / "val.jsonl"),
                "--limit",
                "3",
            ]
        )
        == 0
    )
    assert (run_dir / "eval" / "report.json").read_bytes() == test_report
    val_report = json.loads((run_dir / "eval-val-first3" / "report.json").read_text())
    assert val_report["split"] == "val" and val_report["n_test"] == 3
    assert str(run_dir / "eval-val-first3") in capsys.readouterr().out


def test_evaluate_decoding_modes_report_side_by_side(run_dir):
    dev = Path(__file__).resolve().parents[1] / "data" / "dev_real.jsonl"
    argv = ["evaluate", "--checkpoint", str(run_dir), "--data", str(dev), "--limit", "3"]
    grounded_report = (run_dir / "eval-dev_real" / "report.json").read_bytes()  # written by train
    assert main([*argv, "--decoding", "free"]) == 0
    report = json.loads((run_dir / "eval-dev_real-free-first3" / "report.json").read_text())
    assert report["constraint"] is None and report["n_test"] == 3 and report["repair_tries"] == 2
    assert main([*argv, "--decoding", "format", "--out", str(run_dir / "fmt")]) == 0
    assert json.loads((run_dir / "fmt" / "report.json").read_text())["constraint"] == "format"
    assert main([*argv, "--decoding", "grounded-unbounded"]) == 0
    report = json.loads((run_dir / "eval-dev_real-grounded-unbounded-first3" / "report.json").read_text())
    assert report["constraint"] == "grounded-unbounded"
    assert (run_dir / "eval-dev_real" / "report.json").read_bytes() == grounded_report
    assert main([*argv, "--no-normalize-definitions"]) == 0
    report = json.loads((run_dir / "eval-dev_real-as-written-first3" / "report.json").read_text())
    assert report["normalize_definitions"] is False and report["decoding"] == "grounded"
    # the earlier spelling still selects grounded decoding; a --limit never replaces the full report
    assert main([*argv, "--grounded", "--repair-tries", "0"]) == 0
    report = json.loads((run_dir / "eval-dev_real-first3" / "report.json").read_text())
    assert report["constraint"] == "grounded" and report["repair_tries"] == 0 and report["n_test"] == 3
    assert (run_dir / "eval-dev_real" / "report.json").read_bytes() == grounded_report


def test_evaluate_and_bench_quick(run_dir, tmp_path):
    assert main(["evaluate", "--checkpoint", str(run_dir), "--limit", "4"]) == 0
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--threads", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for key in (
        "train_tokens_per_s",
        "hf_llama_train_tokens_per_s",
        "packing_efficiency",
        "padding_efficiency",
        "kv_cache_speedup",
        "llamacpp_decode_tokens_per_s",
        "torch_decode_tokens_per_s",
    ):
        assert key in result
    assert result["packing_efficiency"] > result["padding_efficiency"]
    # Issue 16: the step at a default run's vocabulary, which the bench's small tokenizer lacks.
    assert result["default_vocab_size"] == 8000 and result["train_tokens_per_s_default_vocab"] > 0
    # Issue 16: the step's profile split, the machine's matmul peak and MFU, for ours and the reference.
    for key in ("profile_ours", "profile_hf"):
        split = result[key]["split_fraction"]
        assert sum(split.values()) == pytest.approx(1.0, abs=0.02)
        assert split["matmul"] > 0
    assert result["profile_ours"]["split_ms"]["logging_health"] > 0  # ours runs the health check
    assert result["matmul_peak_fp32_gflops"] > 0
    assert 0 < result["mfu_fp32_ours"] < 1 and 0 < result["mfu_fp32_hf"] < 1
    # Real tokens per second over the same documents, each model fed by its own pipeline.
    assert result["pipeline_real_tokens_per_s"] > 0 and result["hf_pipeline_real_tokens_per_s"] > 0
    assert result["pipeline_speed_ratio_vs_hf"] == pytest.approx(
        result["pipeline_real_tokens_per_s"] / result["hf_pipeline_real_tokens_per_s"], rel=1e-2
    )


@pytest.mark.parametrize(
    ("argv", "per_level"),
    [([], 8000), (["--quick"], 4000), (["--quick", "--max-per-complexity", "300"], 300)],
)
def test_quick_halves_the_sentences_per_level_and_keeps_the_epochs(argv, per_level):
    from lm_shared.config_cli import parse
    from nanologic.cli import _train_parser, train_config_from_flags, train_inputs_from_flags

    parser = _train_parser()
    cfg, given = parse(parser, argv)
    inputs = train_inputs_from_flags(parser, cfg, given)
    assert inputs.max_per_complexity == per_level == cfg["max_per_complexity"]
    assert train_config_from_flags(parser, cfg, inputs).max_epochs == 2


def test_the_cli_and_the_python_api_train_the_same_default():
    # Issue 17: `nanologic train` trained the preset's epochs (cpu: 2) while TrainConfig() said 12.
    # The preset-dependent defaults now live in one table that TrainConfig.for_preset fills in.
    import inspect

    from lm_shared.config_cli import instantiate, parse
    from nanologic.cli import _train_parser, train_config_from_flags
    from nanologic.configs import PRESET_TRAINING, TrainConfig, TrainInputs
    from nanologic.model import PRESETS
    from nanologic.runner import train_run

    assert set(PRESET_TRAINING) == set(PRESETS)
    parser = _train_parser()
    cfg, _ = parse(parser, [])
    inputs = instantiate(parser, cfg, TrainInputs)
    from_cli = train_config_from_flags(parser, cfg, inputs)
    assert from_cli == TrainConfig().for_preset("cpu")
    assert (from_cli.max_epochs, from_cli.lr) == (2, 6e-3)  # the default run's schedule
    # train_run's defaults are the command's
    names = {"data": "data_dir", "model_config": "model_overrides"}
    params = inspect.signature(train_run).parameters
    for field in dataclasses.fields(TrainInputs):
        if field.name != "quick":
            assert params[names.get(field.name, field.name)].default == field.default, field.name


# Every flag `nanologic train` accepted before its flags came from the config dataclasses (issue 17).
TRAIN_FLAGS_BEFORE = (
    "--out --data --n-generate --max-per-complexity --preset --vocab-size --epochs --quick --max-steps "
    "--max-minutes --batch-size --lr --optimizer --warmup-steps --weight-decay --label-smoothing "
    "--grad-clip --grad-noise --ema --accumulate --loss-on --packing --no-curriculum --cot-epochs "
    "--val-check-interval --precision --seed --resume --force --model-config --compile "
    "--checkpoint-every --devices --num-nodes --strategy --grad-ckpt --debug --threads --eval-limit"
)
# the house vocabulary (issue 17 item 2), beside the old spellings
TRAIN_FLAGS_ADDED = "--accumulate-grad-batches --max-epochs --ema-decay --checkpoint-every-n-steps"


def test_train_flags_and_defaults_are_its_dataclasses():
    from lm_shared.cli_help import options_without_help
    from lm_shared.config_cli import config_fields, flag_problems
    from nanologic.cli import _train_parser

    parser = _train_parser()
    fields = config_fields(parser)
    made = {option for field in fields for option in field.option_strings}
    assert set(f"{TRAIN_FLAGS_BEFORE} {TRAIN_FLAGS_ADDED}".split()) <= made
    assert flag_problems(parser) == []  # every flag is a field, every default the field's
    assert options_without_help(parser) == []


def test_the_old_flags_give_the_same_config():
    from lm_shared.config_cli import instantiate, parse
    from nanologic.cli import _train_parser, train_config_from_flags
    from nanologic.configs import TrainConfig, TrainInputs, TrainOutput

    argv = ["--preset", "tiny", "--accumulate", "2", "--ema", "0.5", "--checkpoint-every", "3",
            "--no-curriculum", "--devices", "0,1", "--epochs", "4", "--lr", "1e-3", "--packing",
            "--model-config", '{"num_layers": 4}', "--resume", "--out", "r"]  # fmt: skip
    parser = _train_parser()
    cfg, _ = parse(parser, argv)
    inputs = instantiate(parser, cfg, TrainInputs)
    assert inputs == TrainInputs(preset="tiny", model_config={"num_layers": 4})
    assert instantiate(parser, cfg, TrainOutput) == TrainOutput(out=Path("r"), resume="last")
    assert train_config_from_flags(parser, cfg, inputs) == TrainConfig(
        accumulate_grad_batches=2,
        ema_decay=0.5,
        checkpoint_every_n_steps=3,
        curriculum=False,
        devices="0,1",
        max_epochs=4,
        lr=1e-3,
        packing=True,
    )
    cfg, _ = parse(parser, ["--resume", "x.ckpt", "--devices", "2"])
    assert instantiate(parser, cfg, TrainOutput).resume == "x.ckpt" and cfg["train.devices"] == 2


def test_the_run_saves_its_settings_and_config_loads_them(run_dir):
    from lm_shared.config_cli import instantiate, parse
    from nanologic.cli import _train_parser, train_config_from_flags
    from nanologic.configs import TrainConfig, TrainInputs

    text = (run_dir / "config.yaml").read_text(encoding="utf-8")
    assert "preset: tiny" in text.splitlines() and "  max_epochs: 1" in text.splitlines()
    assert not {line.split(":")[0] for line in text.splitlines()} & {"out", "resume", "force"}
    parser = _train_parser()
    cfg, _ = parse(parser, ["--config", str(run_dir / "config.yaml")])
    inputs = instantiate(parser, cfg, TrainInputs)
    saved = json.loads((run_dir / "train_config.json").read_text())
    saved["betas"] = tuple(saved["betas"])
    assert train_config_from_flags(parser, cfg, inputs) == TrainConfig(**saved)
    assert (inputs.preset, inputs.n_generate, inputs.vocab_size, inputs.eval_limit) == ("tiny", 400, 600, 12)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch-size", "x"], "error: argument --batch-size: invalid int value: 'x'"),
        (["--preset", "huge"], "error: argument --preset: invalid choice: 'huge'"),
        (["--model-config", "{"], "error: argument --model-config: not valid JSON"),
        (["--devices", "0"], "error: argument --devices: expected at least 1 device"),
        (["--bogus"], "error: unrecognized arguments: --bogus"),
    ],
)
def test_bad_train_flags_are_one_line_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        train_main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate"],
        ["formalize", "Llueve."],
        ["check", "Llueve. Luego llueve."],
        ["export-gguf", "--out", "m.gguf"],
        ["serve"],
    ],
)
def test_run_means_a_trained_run_everywhere_and_checkpoint_stays(argv):
    # Issue 17 item 2: one vocabulary, `--run DIR` for reading a trained run; `--checkpoint` kept.
    from lm_shared.config_cli import parse
    from nanologic.cli import command_parser

    for flag in ("--run", "--checkpoint"):
        cfg, _ = parse(command_parser(argv[0]), [*argv[1:], flag, "runs/x"])
        assert cfg.run == Path("runs/x")


def test_text_report_is_a_command_with_its_checks(tmp_path, capsys):
    # `python -m nanologic.text_report` had its own argparse; it is now `nanologic text-report`.
    from nanologic.text_report import main as module_main

    assert main(["text-report", "--run", str(tmp_path), "--gguf", "m.gguf", "--limit", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: --limit: expected an integer >= 1, got 0")
    assert module_main(["--checkpoint", str(tmp_path / "none"), "--gguf", "m.gguf"]) == 2
    assert "file not found" in capsys.readouterr().err


def test_decoding_defaults_per_backend():
    """Grounded decoding by default in PyTorch; free in llama.cpp, whose grammar sampler is slow."""
    from nanologic.configs import DecodingOptions

    assert DecodingOptions(run=Path("r")).constraint == "grounded"
    assert DecodingOptions(gguf=Path("m.gguf")).constraint is None
    assert DecodingOptions(gguf=Path("m.gguf"), decoding="grounded").constraint == "grounded"
    assert DecodingOptions(gguf=Path("m.gguf"), grounded=True).constraint == "grounded"
    assert DecodingOptions(run=Path("r"), decoding="free").constraint is None
    assert DecodingOptions(run=Path("r"), constrained=True).constraint == "format"
    assert DecodingOptions(run=Path("r"), decoding="format", constrained=True).constraint == "format"


@pytest.mark.parametrize(
    "argv",
    [
        ["--decoding", "free", "--grounded"],
        ["--decoding", "grounded", "--constrained"],
        ["--grounded", "--grammar"],
    ],
)
def test_contradicting_decoding_flags_are_refused(argv, capsys):
    assert main(["formalize", "--run", "r", *argv, "Llueve."]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--decoding" in err and len(err.splitlines()) == 1
