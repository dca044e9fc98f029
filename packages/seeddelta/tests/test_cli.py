"""The CLI is the config dataclasses (issue 17): flags, defaults, old spellings, --config, errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from lm_shared.cli_help import options_without_help
from lm_shared.config_cli import config_fields, flag_problems, instantiate, parse
from seeddelta.cli import COMMANDS, main

# Every flag the argparse CLI accepted before its flags came from the config dataclasses.
FLAGS_BEFORE = {
    "toy": "--pattern --base --K --n-in --n-out --rank --block --scheme --seed --perm-trials --eval-x "
    "--val-type --row-scale --json",
    "tiny train": "--out --seed --steps --docs-per-step --lr --precision --threads --task-weights "
    "--phase1-fraction --phase1-weights --val-samples --max-minutes --quiet --resume --force --init-from "
    "--num-layers --hidden-size --intermediate-size --num-heads",
    "tiny export": "--checkpoint --out --dtype --force",
    "build": "-i --input -o --output --layers --tensors --K --K-gate --K-up --K-down --scheme --block "
    "--idx-type --val-type --row-scale --base --base-kind --base-max-samples --base-perm-trials --imatrix "
    "--imatrix-eps --imatrix-power --eval-cols --eval-x --policy --policy-strict --policy-export "
    "--strip-dense --report-json --seed --stack-cost-cap --delta-norm-clamp-down --refit --act-metrics "
    "--calib-samples --quiet --force",
    "imatrix": "--model --out --samples --seed",
    "eval": "--model --reference --json --samples --seed --threads --records --text",
    "scan": "--model --out --K --K-down --tensors --base --no-row-scale --samples --cliff-drop --tolerance "
    "--seed --threads --quiet",
    "baselines": "--model --out --densities --samples --calib-samples --llamacpp-samples --seed --threads "
    "--quiet",
    "quantize": "--model --out --type --threads",
    "bench": "--out --n-in --n-out --repeats --threads --device --compile",
}


def test_every_command_is_listed():
    assert set(COMMANDS) == set(FLAGS_BEFORE)


@pytest.mark.parametrize("command", sorted(FLAGS_BEFORE))
def test_each_commands_flags_and_defaults_are_its_dataclasses(command: str):
    parser = COMMANDS[command].parser()
    fields = config_fields(parser)
    made = {option for field in fields for option in field.option_strings}
    assert set(FLAGS_BEFORE[command].split()) <= made  # every earlier spelling still works
    assert flag_problems(parser) == []  # every flag is a field, every default the field's
    assert options_without_help(parser) == []


@pytest.mark.parametrize("command", sorted(FLAGS_BEFORE))
def test_help_shows_the_dataclass_defaults(command: str, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command.split(), "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith(f"usage: seeddelta {command} ")
    if command == "tiny train":
        assert "optimizer steps (default: 3000)" in out and "--task-weights COPY SUM BRACKETS" in out


def test_the_old_spellings_give_the_same_configs():
    from seeddelta.builder import BuildConfig
    from seeddelta.options import BaselinesOptions
    from seeddelta.scan import ScanConfig
    from seeddelta.train import TrainConfig

    parser = COMMANDS["tiny train"].parser()
    argv = ["--out", "r", "--task-weights", "1", "2", "1", "--phase1-weights", "2", "0", "1", "--lr", "1e-3"]
    cfg, given = parse(parser, argv)
    assert instantiate(parser, cfg, TrainConfig) == TrainConfig(
        task_weights=(1, 2, 1), phase1_weights=(2, 0, 1), lr=1e-3
    )
    assert given == {"out", "task_weights", "phase1_weights", "lr"}
    parser = COMMANDS["build"].parser()
    cfg, _ = parse(parser, ["-i", "a.gguf", "-o", "b.gguf", "--tensors", "gate,down", "--K-up", "8"])
    assert instantiate(parser, cfg, BuildConfig) == BuildConfig(
        input="a.gguf", output="b.gguf", kinds=("ffn_gate", "ffn_down"), K_up=8
    )
    parser = COMMANDS["scan"].parser()
    cfg, _ = parse(parser, ["--model", "m", "--out", "o", "--K", "16", "--no-row-scale", "--tensors", "up"])
    scan = instantiate(parser, cfg, ScanConfig)
    assert (scan.K, scan.K_down, scan.row_scale, scan.kinds) == (16, 16, False, ("ffn_up",))
    parser = COMMANDS["baselines"].parser()
    cfg, _ = parse(parser, ["--model", "m", "--out", "o", "--densities", "0.5,0.25"])
    assert instantiate(parser, cfg, BaselinesOptions).densities == (0.5, 0.25)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["toy", "--K", "abc"], "error: argument --K: invalid int value: 'abc'"),
        (["toy", "--pattern", "ring"], "error: argument --pattern: invalid choice: 'ring'"),
        (["tiny", "train", "--steps", "3"], "error: the following arguments are required: --out"),
        (
            ["tiny", "train", "--out", "r", "--task-weights", "1", "2"],
            "error: argument --task-weights: expected 3",
        ),
        (["build", "-i", "a.gguf"], "error: the following arguments are required: --output"),
        (
            ["baselines", "--model", "m", "--out", "o", "--densities", "a,b"],
            "error: argument --densities: expected",
        ),
        (["bench", "--out", "b.json", "--device", "tpu"], "error: argument --device: invalid choice: 'tpu'"),
    ],
)
def test_bad_flags_are_one_line_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err


def test_a_bad_model_shape_is_one_line_naming_the_field(tmp_path: Path, capsys):
    assert main(["tiny", "train", "--out", str(tmp_path / "r"), "--hidden-size", "0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model shape") and "hidden_size" in err and err.count("\n") == 1


def test_the_run_saves_its_settings_and_config_loads_them(tmp_path: Path):
    from seeddelta.model import ModelConfig
    from seeddelta.train import TrainConfig

    run = tmp_path / "run"
    argv = ["tiny", "train", "--out", str(run), "--steps", "2", "--docs-per-step", "2", "--val-samples", "3"]
    argv += ["--hidden-size", "32", "--intermediate-size", "64", "--num-layers", "1", "--num-heads", "2"]
    argv += ["--task-weights", "1", "2", "1", "--precision", "32-true", "--threads", "1", "--quiet"]
    assert main(argv) == 0
    text = (run / "config.yaml").read_text(encoding="utf-8")
    keys = {line.split(":")[0] for line in text.splitlines() if line and not line.startswith(("-", " "))}
    assert "steps: 2" in text.splitlines() and not keys & {"out", "force", "resume", "quiet", "config"}
    saved = json.loads((run / "config.json").read_text(encoding="utf-8"))
    parser = COMMANDS["tiny train"].parser()
    cfg, _ = parse(parser, ["--config", str(run / "config.yaml"), "--out", "elsewhere"])
    assert instantiate(parser, cfg, TrainConfig) == TrainConfig(
        **{**saved["train"], "task_weights": (1, 2, 1), "phase1_weights": (1, 0, 1)}
    )
    model = instantiate(parser, cfg, ModelConfig, vocab_size=saved["model"]["vocab_size"])
    assert dataclasses.asdict(model) == saved["model"]


@pytest.mark.parametrize(
    ("extra", "steps"), [([], 3000), (["--quick"], 1500), (["--quick", "--steps", "40"], 40)]
)
def test_quick_halves_the_default_steps_unless_steps_is_given(tmp_path, monkeypatch, extra, steps):
    import seeddelta.train

    seen = {}

    def fake_train(out, cfg, **kwargs):
        seen["steps"] = cfg.steps
        report = {"exact_match": {}, "answer_nll": 0.0, "ppl": 1.0, "train_seconds": 0.0}
        return report | {
            "threads": 1,
            "threads_reason": "as asked",
            "compiled": False,
            "compile_reason": "off",
        }

    monkeypatch.setattr(seeddelta.train, "train", fake_train)
    assert main(["tiny", "train", "--out", str(tmp_path / "r"), "--quiet", *extra]) == 0
    assert seen["steps"] == steps
