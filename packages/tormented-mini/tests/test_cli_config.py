"""Issue 17: every command's flags come from its config dataclasses (lm_shared.config_cli).

Every flag spelling the argparse CLI accepted is still accepted, each parser's defaults are its
dataclasses' defaults, a training run saves the config.yaml that ``--config`` loads back, and
parse errors are one line with exit status 2.
"""

import json
from pathlib import Path

import pytest

from lm_shared.config_cli import config_fields, flag_problems, instantiate, parse
from tormented_mini.cli import COMMANDS, main
from tormented_mini.options import AblateOptions, BenchOptions, FillMaskOptions, RunOptions
from tormented_mini.train import TrainConfig

# Every flag the argparse CLI accepted before its flags came from the config dataclasses.
FLAGS_BEFORE = {
    "train": "--model --size --out --data --hf-dataset --hf-config --hf-split --text-field --max-docs "
    "--vocab-size --seq-len --batch-size --accumulate-grad-batches --max-steps --lr --ode-lr-scale "
    "--warmup-steps --clip-norm --max-retries --eval-every --precision --seed --devices --num-nodes "
    "--strategy --compile --threads --norm --hope --bitnet --moe --titan-memory --model-config --resume "
    "--force --no-progress",
    "bench": "--out --size --batch-size --seq-len --steps --threads --no-bf16 --device --compile",
    "ablate": "--out --model --data --max-steps --batch-size --seq-len --lr --seeds --eval-batches "
    "--threads --runs-dir",
    "fill-mask": "--top-k",
    "info": "",
}
# Issue 17's shared vocabulary: names added beside the earlier ones.
NEW_ALIASES = {
    "train": "--grad-clip --grad-accum --norm-type --use-hope --use-bitnet --use-moe --use-titan-memory",
    "fill-mask": "--run",
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_commands_flags_and_defaults_are_its_dataclasses(command):
    parser = COMMANDS[command].parser()
    fields = config_fields(parser)
    made = {option for field in fields for option in field.option_strings}
    assert set(FLAGS_BEFORE[command].split()) <= made  # every earlier spelling still works
    assert set(NEW_ALIASES.get(command, "").split()) <= made
    assert flag_problems(parser) == []  # every flag is a field, every default the field's


def test_parsed_defaults_build_the_dataclasses_defaults():
    parser = COMMANDS["train"].parser()
    cfg, given = parse(parser, [])
    assert given == set() and instantiate(parser, cfg, TrainConfig) == TrainConfig()
    assert instantiate(parser, cfg, RunOptions) == RunOptions()
    parser = COMMANDS["bench"].parser()
    assert instantiate(parser, parse(parser, ["--out", "b.json"])[0], BenchOptions) == BenchOptions(
        out=Path("b.json")
    )
    parser = COMMANDS["ablate"].parser()
    assert instantiate(parser, parse(parser, ["--out", "a.json"])[0], AblateOptions) == AblateOptions(
        out=Path("a.json")
    )


def test_old_and_new_spellings_give_the_same_settings():
    parser = COMMANDS["train"].parser()

    def train_config(*argv):
        return instantiate(parser, parse(parser, list(argv))[0], TrainConfig)

    old = train_config(
        "--clip-norm", "0.5", "--accumulate-grad-batches", "2", "--norm", "derf", "--hope", "off",
        "--bitnet", "on", "--moe", "no", "--titan-memory", "1", "--devices", "2",
    )  # fmt: skip
    new = train_config(
        "--grad-clip", "0.5", "--grad-accum", "2", "--norm-type", "derf", "--use-hope", "off",
        "--use-bitnet", "on", "--use-moe", "no", "--use-titan-memory", "1", "--devices", "2",
    )  # fmt: skip
    assert old == new
    assert (old.clip_norm, old.accumulate_grad_batches, old.norm_type) == (0.5, 2, "derf")
    assert (old.use_hope, old.use_bitnet, old.use_moe, old.use_titan_memory, old.devices) == (
        False, True, False, True, "2",
    )  # fmt: skip
    assert train_config("--betas", "0.8", "0.9").betas == (0.8, 0.9)
    assert train_config("--model-overrides", '{"hidden_size": 32}').model_overrides == {"hidden_size": 32}
    ablate = COMMANDS["ablate"].parser()
    options = instantiate(
        ablate, parse(ablate, ["--out", "a.json", "--seeds", "0", "1", "2"])[0], AblateOptions
    )
    assert options.seeds == (0, 1, 2)
    bench = COMMANDS["bench"].parser()
    assert instantiate(bench, parse(bench, ["--out", "b.json", "--no-bf16"])[0], BenchOptions).bf16 is False
    fill = COMMANDS["fill-mask"].parser()
    for argv in (["runs/x", "la [MASK]"], ["--run", "runs/x", "la [MASK]"], ["la [MASK]", "--run", "runs/x"]):
        options = instantiate(fill, parse(fill, argv)[0], FillMaskOptions)
        assert (str(options.run), options.text) == ("runs/x", "la [MASK]")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--hope", "maybe"], "argument --hope/--use-hope: expected on/off, got 'maybe'"),
        (["train", "--model", "big"], "argument --model: invalid choice: 'big'"),
        (["train", "--max-steps", "x"], "argument --max-steps: invalid int value: 'x'"),
        (["train", "--clip-norm", "x"], "argument --grad-clip/--clip-norm: invalid float value: 'x'"),
        (["bench"], "the following arguments are required: --out"),
        (["ablate", "--out", "a.json", "--seeds"], "argument --seeds: expected at least one argument"),
    ],
)
def test_parse_errors_are_one_line_with_status_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and len(err.strip().splitlines()) == 1, err


def test_fill_mask_without_a_run_names_both_spellings(capsys):
    assert main(["fill-mask", "la [MASK]"]) == 2
    assert "fill-mask RUN TEXT (or --run RUN)" in capsys.readouterr().err


TINY_MODEL = {"hidden_size": 32, "num_heads": 2, "retention_heads": 2, "embedding_size": 16, "num_experts": 2}
TINY = ["--size", "cpu", "--max-steps", "2", "--eval-every", "2", "--batch-size", "2", "--seq-len", "16"]
TINY += [
    "--vocab-size",
    "300",
    "--threads",
    "1",
    "--no-progress",
    "--model-overrides",
    json.dumps(TINY_MODEL),
]


def test_train_saves_the_config_that_loads_back(tmp_path):
    model_config = tmp_path / "m.json"
    model_config.write_text('{"ode_steps": 1}')
    out = tmp_path / "run"
    argv = [*TINY, "--seed", "3", "--grad-clip", "0.5", "--model-config", str(model_config)]
    assert main(["train", *argv, "--out", str(out)]) == 0
    saved = (out / "config.yaml").read_text(encoding="utf-8")
    lines = saved.splitlines()
    assert "seed: 3" in lines and "clip_norm: 0.5" in lines and "  ode_steps: 1" in lines
    assert not any(
        line.split(":")[0] in ("out", "resume", "force", "progress", "model_config") for line in lines
    )
    first = json.loads((out / "train_config.json").read_text())
    assert first["model_overrides"] == {**TINY_MODEL, "ode_steps": 1}
    again = tmp_path / "again"
    assert main(["train", "--config", str(out / "config.yaml"), "--no-progress", "--out", str(again)]) == 0
    second = json.loads((again / "train_config.json").read_text())
    assert {**first, "out": ""} == {**second, "out": ""}
    assert (out / "stability.jsonl").read_text() == (again / "stability.jsonl").read_text()
    assert (again / "config.yaml").read_text(encoding="utf-8") == saved
