"""Issue 19 for nanologic: bad input is one line naming what is wrong, and no saved work is lost."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lm_shared.cli_help import options_without_help
from lm_shared.errors import UserError
from lm_shared.runs import NonFiniteError, atomic_write_json
from nanologic.cli import main, train_main
from nanologic.data import SPECIAL_TOKENS, read_jsonl, read_raw
from nanologic.logic import parse


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--max-steps", "-5"], "--max-steps"),
        (["--batch-size", "0"], "--batch-size"),
        (["--epochs", "0"], "--epochs"),
        (["--precision", "fp64"], "--precision"),
        (["--lr", "nan"], "--lr"),
        (["--vocab-size", "10"], "--vocab-size"),
        (["--model-config", '{"bogus": 1}'], "bogus"),
        (["--model-config", '{"num_heads": 5}'], "--model-config"),
        (["--threads", "-1"], "--threads"),
        (["--symbolic-share", "1.5"], "--symbolic-share"),
        (["--comma-less-share", "1.5"], "--comma-less-share"),
    ],
)
def test_bad_hyperparameters_are_refused_before_any_work(tmp_path, capsys, flags, named) -> None:
    out = tmp_path / "run"
    assert train_main(["--preset", "tiny", "--out", str(out), *flags]) == 2
    assert named in _one_error_line(capsys)
    assert not out.exists()  # nothing generated, no tokenizer built


def test_interrupted_and_finished_runs_are_never_restarted_silently(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    atomic_write_json(out / "run.json", {"package": "nanologic", "status": "interrupted", "step": 40})
    assert train_main(["--preset", "tiny", "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert "interrupted run (last checkpoint at step 40)" in line and "--resume" in line
    atomic_write_json(out / "run.json", {"package": "seeddelta", "status": "finished"})
    assert train_main(["--preset", "tiny", "--out", str(out), "--force"]) == 2
    assert "a seeddelta run folder" in _one_error_line(capsys)
    assert main(["formalize", "--checkpoint", str(out), "Llueve."]) == 2
    assert "a seeddelta run folder, not a nanologic one" in _one_error_line(capsys)


def test_resume_without_data_continues_on_the_runs_own_data(tmp_path, capsys) -> None:
    # `--resume` without --data generated a new dataset beside the run trained on --data DIR;
    # the run's own DIR is used (here it was moved away, so the resume names it and stops).
    out, data = tmp_path / "run", tmp_path / "my-data"
    out.mkdir()
    config = {"data": str(data), "n_generate": None, "max_per_complexity": None}  # as a --data run saves it
    state = {"package": "nanologic", "status": "interrupted", "step": 3, "config": config}
    atomic_write_json(out / "run.json", state)
    assert train_main(["--preset", "tiny", "--out", str(out), "--resume"]) == 2
    assert str(data / "train.jsonl") in _one_error_line(capsys)
    assert not (out / "data").exists()  # nothing generated


def test_resume_continues_with_the_runs_own_settings(tiny_run, tmp_path, capsys) -> None:
    """The resume command a Ctrl-C prints, `nanologic train --out RUN --resume`, had been refused
    for any run started with options ("--resume asks for preset='cpu', but the run was started
    with preset='tiny'"): the options not typed again now come from the run's config.yaml."""
    import shutil

    import yaml

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "model.safetensors").unlink()  # as a Ctrl-C leaves it: checkpoints, no weights
    state = json.loads((run / "run.json").read_text())
    atomic_write_json(run / "run.json", {**state, "status": "interrupted"})
    assert train_main(["--out", str(run), "--resume"]) == 0
    assert (run / "model.safetensors").is_file()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["preset"], saved["n_generate"], saved["train"]["batch_size"]) == ("tiny", 300, 16)
    capsys.readouterr()

    atomic_write_json(run / "run.json", {**state, "status": "interrupted"})
    assert train_main(["--out", str(run), "--resume", "--batch-size", "8"]) == 2  # typed: compared
    assert "batch_size=8" in _one_error_line(capsys)
    (run / "config.yaml").write_text("- not\n- settings\n")
    assert train_main(["--out", str(run), "--resume"]) == 2
    assert "config.yaml: expected the settings a run saves" in _one_error_line(capsys)


def test_stage_inputs_non_utf8_skipped_stage_and_empty(tmp_path, capsys) -> None:
    latin1 = tmp_path / "raw.json"
    latin1.write_bytes('{"examples": [{"natural_language_input": "Ma\u00f1ana llueve"}]}'.encode("latin-1"))
    assert main(["clean", str(latin1), "--out", str(tmp_path / "c.json")]) == 2
    assert str(latin1) in _one_error_line(capsys)
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_bytes(b'{"input": "ok"}\n{"input": "\xf1"}\n')
    with pytest.raises(UserError, match=r"rows\.jsonl:2: not UTF-8"):
        read_jsonl(jsonl)
    # a raw tab inside a string: json's message ends in " at", the position is given as line:column
    jsonl.write_text('{"input": "ok"}\n{"input": "a\tb"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"rows\.jsonl:2:13: malformed JSON: Invalid control character$"):
        read_jsonl(jsonl)

    processed = tmp_path / "train.jsonl"  # preprocess output given to a stage that wants clean output
    processed.write_text(
        json.dumps({"natural_language_input": "Llueve.", "complexity": "simple", "formula": "A"}) + "\n"
    )
    assert main(["augment", str(processed), "--out", str(tmp_path / "a.json")]) == 2
    line = _one_error_line(capsys)
    assert "example 0" in line and "output.formula" in line and "skipped" in line

    empty = tmp_path / "empty.json"
    empty.write_text('{"examples": []}\n')
    for stage in ("clean", "verify", "augment", "preprocess"):
        out = tmp_path / f"{stage}-out"
        assert main([stage, str(empty), "--out", str(out)]) == 2
        assert "no examples" in _one_error_line(capsys)
        assert not out.exists()


def _tiny_run(tmp_path: Path) -> Path:
    from lm_shared.tokenization import train_bpe
    from nanologic.inference import save_run_model
    from nanologic.model import NanoLogic, build_config

    run = tmp_path / "tiny"
    tok = train_bpe(["Llueve y hace frío.", "Si llueve, me mojo."] * 5, 300, SPECIAL_TOKENS)
    tok.save(run / "tokenizer")
    save_run_model(NanoLogic(build_config("tiny", tok.vocab_size)), run)
    return run


def test_damaged_weights_and_tokenizer_are_named(tmp_path, capsys) -> None:
    run = _tiny_run(tmp_path)
    assert main(["formalize", "--checkpoint", str(run), "Llueve."]) == 0
    capsys.readouterr()
    weights = run / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    assert main(["formalize", "--checkpoint", str(run), "Llueve."]) == 2
    assert "model.safetensors: damaged" in _one_error_line(capsys)
    weights.write_bytes(good)
    tokenizer = run / "tokenizer" / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes()[:50])
    assert main(["formalize", "--checkpoint", str(run), "Llueve."]) == 2
    assert "tokenizer.json" in _one_error_line(capsys)


def test_a_non_finite_model_is_never_saved(tmp_path) -> None:
    from nanologic.inference import save_run_model
    from nanologic.model import NanoLogic, build_config

    model = NanoLogic(build_config("tiny", 300))
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="NaN"):
        save_run_model(model, tmp_path / "run")
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_truncated_checkpoint_is_named_and_damaged_cache_is_rebuilt(tmp_path, capsys) -> None:
    from lm_shared.tokenization import train_bpe
    from nanologic.training import cached_examples, resumable_checkpoint

    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}}, ckpt)
    assert resumable_checkpoint(ckpt) == ckpt
    ckpt.write_bytes(ckpt.read_bytes()[:40])
    with pytest.raises(UserError, match=r"last\.ckpt: damaged checkpoint"):
        resumable_checkpoint(ckpt)

    split = tmp_path / "train.jsonl"
    record = {"natural_language_input": "Llueve.", "atoms": {"A": "llueve"}, "connectors": []}
    split.write_text(json.dumps({**record, "formula": "A", "complexity": "simple"}) + "\n")
    tok = train_bpe(["Llueve. A: llueve"] * 5, 300, SPECIAL_TOKENS)
    first = cached_examples(tok, split, tmp_path / "cache", False, 64)
    (cache,) = (tmp_path / "cache").iterdir()
    cache.write_bytes(cache.read_bytes()[:10])
    again = cached_examples(tok, split, tmp_path / "cache", False, 64)
    assert [e.ids for e in again] == [e.ids for e in first]
    assert "damaged token cache" in capsys.readouterr().err
    assert [e.ids for e in cached_examples(tok, split, tmp_path / "cache", False, 64)] == [
        e.ids for e in first
    ]


def test_stage_help_shows_defaults(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["clean", "--help"])
    out = capsys.readouterr().out
    assert "(default: 0.05)" in out and "(default: 5)" in out


# ------------------------------------------------------------------ property tests (hypothesis)

_PROPERTY = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_PROPERTY
@given(st.lists(st.sampled_from([*"pqrAB ()~&|¬∧∨→↔TF01x,;", "<->", "->"]), max_size=30).map("".join))
def test_formula_parser_raises_only_user_errors_on_formula_like_text(text: str) -> None:
    with contextlib.suppress(UserError):
        parse(text)


@_PROPERTY
@given(st.text(max_size=60))
def test_formula_parser_raises_only_user_errors_on_any_text(text: str) -> None:
    with contextlib.suppress(UserError):
        parse(text)


@_PROPERTY
@given(st.binary(max_size=400), st.sampled_from(["x.jsonl", "x.json"]))
def test_json_readers_raise_only_user_errors_on_any_bytes(tmp_path_factory, data: bytes, name: str) -> None:
    path = tmp_path_factory.mktemp("r") / name
    path.write_bytes(data)
    for reader in (read_raw, read_jsonl):
        try:
            reader(path)
        except UserError as exc:
            assert str(path) in str(exc)


@_PROPERTY
@given(
    st.lists(
        st.one_of(
            st.text(max_size=30),
            st.builds(
                json.dumps,
                st.recursive(
                    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                    max_leaves=8,
                ),
            ),
        ),
        max_size=5,
    )
)
def test_formalize_input_reader_raises_only_user_errors(tmp_path_factory, lines: list[str]) -> None:
    path = tmp_path_factory.mktemp("f") / "in.jsonl"
    path.write_text("\n".join(line.replace("\n", " ") for line in lines), encoding="utf-8")
    with contextlib.suppress(UserError):
        read_jsonl(path, required=("input",))


def test_train_and_stage_help_describe_every_option(capsys) -> None:
    # `train --help` listed --lr, --batch-size, --max-steps ... with no text and no default
    # (issue 19's user trials); every option now has a description and shows its default.
    from nanologic.cli import COMMANDS, command_parser

    for name in COMMANDS:
        assert options_without_help(command_parser(name)) == [], name
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert (
        "--max-steps MAX_STEPS stop after this many optimizer steps (-1: the epochs decide) (default: -1)"
        in out
    )
