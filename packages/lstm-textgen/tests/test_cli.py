"""End-to-end: the CLI trains, samples and evaluates a tiny model; bad input fails cleanly."""

import csv
import json
from pathlib import Path

import keras
import pytest

from lm_shared.cli_help import options_without_help
from lm_shared.errors import UserError
from lstm_textgen.cli import main, train_main
from lstm_textgen.data import DataConfig
from lstm_textgen.model import ModelConfig
from lstm_textgen.train import TrainConfig, train

EVAL_KEYS = {
    "perplexity",
    "bits_per_byte",
    "bleu",
    "distinct_1",
    "distinct_2",
    "distinct_3",
    "repetition_rate",
    "longest_repeated_run",
    "samples",
}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_train_args) -> Path:
    out = tmp_path_factory.mktemp("run") / "lstm"
    assert train_main([*tiny_train_args, "--out", str(out)]) == 0
    return out


def test_train_writes_a_complete_run_folder(trained_run: Path, capsys):
    for name in ("config.json", "model.keras", "history.csv", "metrics.json", "tokenizer/vocab.json"):
        assert (trained_run / name).exists(), name
    assert sorted(p.name for p in (trained_run / "checkpoints").iterdir()) == [
        "epoch_001.keras",
        "epoch_002.keras",
    ]
    assert any((trained_run / "logs").rglob("*tfevents*"))
    assert not (trained_run / "backup").exists()  # BackupAndRestore cleans up after a finished run
    config = json.loads((trained_run / "config.json").read_text())
    assert config["data"]["seq_len"] == 32 and config["model"]["vocab_size"] > 4


def test_sample_continues_the_prompt(trained_run: Path, capsys):
    code = main(["sample", "--model", str(trained_run), "--prompt", "Shall I", "--max-new-tokens", "20"])
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("Shall I") and len(out.rstrip("\n")) > len("Shall I")


def test_evaluate_writes_the_contract_keys(trained_run: Path, tmp_path: Path):
    out = tmp_path / "eval.json"
    argv = [
        "evaluate",
        "--model",
        str(trained_run),
        "--out",
        str(out),
        "--prompts",
        "3",
        "--new-tokens",
        "20",
    ]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert EVAL_KEYS <= set(result)
    assert 1.0 < result["perplexity"] < 200 and result["bits_per_byte"] > 0
    assert set(result["samples"]) == {"greedy", "0.5", "1.0", "1.5"}
    assert 0 <= result["distinct_1"] <= 1 and 0 <= result["bleu"] <= 100
    assert 0 <= result["unk_rate"] < 0.01  # char level on the sonnets: (almost) nothing unknown


def test_an_epoch_checkpoint_can_be_sampled(trained_run: Path, capsys):
    checkpoint = trained_run / "checkpoints" / "epoch_001.keras"
    assert main(["sample", "--model", str(checkpoint), "--prompt", "When", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.startswith("When")


def test_finished_run_is_never_overwritten(trained_run: Path, tiny_train_args, capsys):
    before = (trained_run / "model.keras").stat().st_mtime_ns
    assert train_main([*tiny_train_args, "--out", str(trained_run)]) == 2
    assert "holds a finished run" in capsys.readouterr().err
    assert (trained_run / "model.keras").stat().st_mtime_ns == before


def test_user_errors_exit_2_without_traceback(tmp_path: Path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9\n")
    assert train_main(["--data", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.txt: not valid UTF-8" in err and "Traceback" not in err
    assert main(["sample", "--model", str(tmp_path / "missing"), "--prompt", "x"]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert train_main(["--vocab-size", "3", "--out", str(tmp_path / "r2")]) == 2
    assert "too small" in capsys.readouterr().err


@pytest.mark.parametrize("lr", ["nan", "inf", "-1", "0"])
def test_a_non_finite_or_non_positive_lr_is_refused_before_any_work(tmp_path: Path, capsys, lr: str):
    # NaN compares False with everything: `lr <= 0` let it through, and training ran into a
    # "diverged" error after writing checkpoints (issue 19's user trials).
    assert train_main(["--lr", lr, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --lr") and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_unknown_prompt_is_reported(trained_run: Path, capsys):
    assert main(["sample", "--model", str(trained_run), "--prompt", "@@@"]) == 2
    assert "none of its 3 tokens" in capsys.readouterr().err


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_from_backup(tmp_path: Path):
    data = DataConfig(seq_len=32, stride=16)
    model = ModelConfig(lstm_units=16, embedding_dim=8)
    config = TrainConfig(epochs=3, steps_per_epoch=2)
    with pytest.raises(KeyboardInterrupt):
        train(data, model, config, tmp_path, extra_callbacks=[_Interrupt()])
    assert (tmp_path / "backup").exists() and not (tmp_path / "model.keras").exists()
    with pytest.raises(UserError, match="interrupted run.*--resume"):
        train(data, model, config, tmp_path)  # never restarted silently beside the backup
    metrics = train(data, model, config, tmp_path, resume=True)
    assert metrics["resumed"] is True
    with open(tmp_path / "history.csv") as f:
        epochs = [int(row["epoch"]) for row in csv.DictReader(f)]
    assert epochs == [0, 1, 2]  # epochs 0-1 from the first run, 2 after resuming
    assert metrics["epochs_run"] == 3 and metrics["epochs_this_session"] == 1  # whole-run summary


def test_resume_keeps_the_runs_own_data_and_settings(tmp_path: Path, capsys):
    # `--resume` without --data trained on the embedded sonnets with the run's tokenizer (the
    # unset option fell back to its default); now every option not typed is the run's own.
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quiet river runs under the old stone bridge.\n" * 120, encoding="utf-8")
    run = tmp_path / "run"
    data = DataConfig(data=str(corpus), seq_len=32, stride=16)
    with pytest.raises(KeyboardInterrupt):
        train(
            data,
            ModelConfig(lstm_units=16, embedding_dim=8, max_len=32),
            TrainConfig(epochs=3, steps_per_epoch=2),
            run,
            extra_callbacks=[_Interrupt()],
        )
    other = tmp_path / "other.txt"
    other.write_text("a different text entirely, with other words in it.\n" * 120, encoding="utf-8")
    assert train_main(["--out", str(run), "--resume", "--data", str(other)]) == 2
    assert "data.data" in capsys.readouterr().err  # a typed setting that differs is refused, named
    assert train_main(["--out", str(run), "--resume"]) == 0
    saved = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert saved["data"]["data"] == str(corpus) and saved["data"]["seq_len"] == 32
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 3


def test_overwrite_killed_mid_run_leaves_the_finished_run_whole(tmp_path: Path):
    data = DataConfig(seq_len=32, stride=16)
    model = ModelConfig(lstm_units=16, embedding_dim=8)
    run = tmp_path / "run"
    train(data, model, TrainConfig(epochs=1, steps_per_epoch=2), run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(UserError, match="--overwrite"):
        train(data, model, TrainConfig(epochs=1, steps_per_epoch=2), run)
    with pytest.raises(KeyboardInterrupt):
        train(
            DataConfig(seq_len=24, stride=12),
            model,
            TrainConfig(epochs=3, steps_per_epoch=2),
            run,
            overwrite=True,
            extra_callbacks=[_Interrupt()],
        )
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert after == before  # old model.keras, tokenizer and config together, nothing new mixed in
    assert main(["sample", "--model", str(run), "--prompt", "Shall", "--max-new-tokens", "5"]) == 0


def test_train_help_describes_every_option(capsys):
    from lstm_textgen.cli import _train_parser

    assert options_without_help(_train_parser()) == []
    with pytest.raises(SystemExit):
        train_main(["--help"])
    assert "(default: 32)" in capsys.readouterr().out


def test_another_members_run_folder_is_named(tmp_path: Path, capsys):
    # `sample --model <a nanologic run>` said "model.keras: not found; train a model first
    # (lstm-textgen train ...)", a bare command not on PATH; it names the folder's member now.
    run = tmp_path / "nl"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"package": "nanologic", "status": "finished"}))
    assert main(["sample", "--model", str(run)]) == 2
    err = capsys.readouterr().err
    assert "a nanologic run folder, not a lstm-textgen one" in err and "Traceback" not in err
    (run / "run.json").unlink()
    assert main(["sample", "--model", str(run)]) == 2
    assert "(uv run --package lstm-textgen train --out" in capsys.readouterr().err


def test_ctrl_c_stops_with_a_resumable_backup_even_when_started_in_the_background(tmp_path: Path):
    # Started with SIGINT ignored (nohup, `&`), Ctrl-C / kill -INT did nothing and the run went
    # on to the end; lstm-textgen now handles SIGINT and SIGTERM itself, like the other members.
    import signal
    import subprocess
    import sys
    import time

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quiet river runs under the old stone bridge.\n" * 200, encoding="utf-8")
    run = tmp_path / "run"
    code = "import sys; from lstm_textgen.cli import train_main; sys.exit(train_main(sys.argv[1:]))"
    argv = [sys.executable, "-c", code, "--data", str(corpus), "--out", str(run), "--epochs", "500",
            "--steps-per-epoch", "2", "--lstm-units", "8", "--embedding-dim", "4", "--seq-len", "16",
            "--jit-compile", "off"]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    history = run / "history.csv"
    deadline = time.monotonic() + 300
    while not (history.is_file() and len(history.read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-500:]
    assert "Traceback" not in err and "--resume" in err
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    assert (run / "backup").is_dir() and not (run / "model.keras").exists()


# Every flag the argparse CLI accepted before its flags came from the config dataclasses (issue 17).
FLAGS_BEFORE = {
    "train": "--data --tokenizer --vocab-size --seq-len --stride --split --batch-size --lowercase "
    "--no-punctuation --model --embedding-dim --lstm-units --lstm-layers --dropout --transformer-layers "
    "--epochs --lr --label-smoothing --grad-accum --steps-per-epoch --patience --seed --precision "
    "--jit-compile --out --overwrite --resume",
    "sample": "--model --prompt --strategy --temperature --top-k --top-p --max-new-tokens --stop "
    "--num-samples --seed",
    "evaluate": "--model --out --data --prompts --prompt-tokens --new-tokens --seed",
    "eda": "--data --out --lowercase --no-punctuation --top",
    "bench": "--out --data --tokenizer --steps --new-tokens --no-bf16 --seq-len --batch-size "
    "--jit-compile --rounds --seed",
}


@pytest.mark.parametrize("command", sorted(FLAGS_BEFORE))
def test_each_commands_flags_and_defaults_are_its_dataclasses(command: str):
    from lm_shared.config_cli import config_fields, flag_problems
    from lstm_textgen.cli import COMMANDS

    parser = COMMANDS[command].parser()
    fields = config_fields(parser)
    made = {option for field in fields for option in field.option_strings}
    assert set(FLAGS_BEFORE[command].split()) <= made  # every earlier spelling still works
    assert flag_problems(parser) == []  # every flag is a field, every default the field's
    assert options_without_help(parser) == []


def test_the_old_flags_give_the_same_configs():
    from lm_shared.config_cli import instantiate, parse
    from lstm_textgen.cli import _train_parser

    argv = ["--split", "90/10", "--no-punctuation", "--model", "transformer", "--lr", "3e-4",
            "--grad-accum", "2", "--patience", "5", "--tokenizer", "word", "--jit-compile", "off"]  # fmt: skip
    parser = _train_parser()
    cfg, given = parse(parser, argv)
    data = instantiate(parser, cfg, DataConfig)
    assert data == DataConfig(split=(0.9, 0.1), keep_punctuation=False, tokenizer="word")
    assert instantiate(parser, cfg, ModelConfig).architecture == "transformer"
    assert instantiate(parser, cfg, TrainConfig) == TrainConfig(
        learning_rate=3e-4, grad_accum_steps=2, early_stopping_patience=5, jit_compile="off"
    )
    assert {"learning_rate", "architecture", "keep_punctuation"} <= given


def test_the_run_saves_its_settings_and_config_loads_them(trained_run: Path, tmp_path: Path):
    from lm_shared.config_cli import instantiate, parse
    from lstm_textgen.cli import _train_parser
    from lstm_textgen.train import config_from_dict

    saved = trained_run / "config.yaml"
    text = saved.read_text(encoding="utf-8")
    keys = {line.split(":")[0] for line in text.splitlines() if line and not line.startswith(("-", " "))}
    assert "seq_len: 32" in text.splitlines() and not keys & {"out", "overwrite", "resume", "config"}
    config = json.loads((trained_run / "config.json").read_text(encoding="utf-8"))
    parser = _train_parser()
    cfg, _ = parse(parser, ["--config", str(saved), "--epochs", "5"])
    assert instantiate(parser, cfg, DataConfig) == config_from_dict(DataConfig, config["data"])
    assert instantiate(parser, cfg, TrainConfig) == TrainConfig(**{**config["train"], "epochs": 5})
    model = instantiate(parser, cfg, ModelConfig, vocab_size=config["model"]["vocab_size"], max_len=32)
    assert model == ModelConfig(**config["model"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--seq-len", "abc"], "error: argument --seq-len: invalid int value: 'abc'"),
        (["train", "--split", "a,b"], "error: argument --split: expected comma-separated fractions"),
        (["train", "--model", "gru"], "error: argument --model: invalid choice: 'gru'"),
        (["sample", "--prompt", "x"], "error: the following arguments are required: --model"),
        (["bench", "--out", "b.json", "--bf16"], "error: unrecognized arguments: --bf16"),
    ],
)
def test_bad_flags_are_one_line_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err


def test_the_house_spellings_are_aliases():
    # Issue 17's one vocabulary: --run DIR reads a trained run, --hidden-size is the width and
    # --accumulate-grad-batches the accumulation, as in the other members.
    from lm_shared.config_cli import instantiate, parse
    from lstm_textgen.cli import _evaluate_parser, _sample_parser, _train_parser
    from lstm_textgen.configs import EvaluateOptions, SampleOptions

    for make, options, rest in (
        (_sample_parser, SampleOptions, []),
        (_evaluate_parser, EvaluateOptions, ["--out", "eval.json"]),
    ):
        parser = make()
        by_run = instantiate(parser, parse(parser, ["--run", "runs/a", *rest])[0], options)
        assert by_run == instantiate(parser, parse(parser, ["--model", "runs/a", *rest])[0], options)
    parser = _train_parser()
    cfg, _ = parse(parser, ["--hidden-size", "64", "--accumulate-grad-batches", "3"])
    assert instantiate(parser, cfg, ModelConfig).lstm_units == 64
    assert instantiate(parser, cfg, TrainConfig).grad_accum_steps == 3
