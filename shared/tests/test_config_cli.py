"""lm_shared.config_cli: flags from dataclass fields, --config files, the saved config."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from lm_shared.config_cli import (
    ConfigParser,
    Flag,
    add_dataclass_flags,
    config_fields,
    config_parser,
    dump_config,
    field_comments,
    instantiate,
    parse,
    take_saved_settings,
)


@dataclass(frozen=True)
class Data:
    """Where the text comes from."""

    path: str | None = None  # a text file; None = the built-in one
    seq_len: int = 100  # tokens per window (50% overlap)
    split: tuple[float, ...] = (
        0.8,
        0.2,
    )  # train/validation fractions
    lowercase: bool = False  # fold case
    keep_punctuation: bool = True  # False turns punctuation into spaces


@dataclass
class Optim:
    # the Adam step size
    learning_rate: float = 1e-3
    kind: Literal["adam", "sgd"] = "adam"
    """Which optimizer."""
    out: Path | None = None
    epochs: int = dataclasses.field(default=3)  # passes over the data


@dataclass
class Needs:
    model: Path  # the run folder
    top: int = 5


def _split(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.replace("/", ",").split(","))


def make_parser():
    parser = config_parser("prog train", "Train.")
    add_dataclass_flags(
        parser,
        Data,
        flags={
            "path": Flag(name="--data"),
            "keep_punctuation": Flag(aliases=("--no-punctuation",)),
            "split": Flag(parse=_split),
        },
    )
    add_dataclass_flags(parser, Optim, flags={"learning_rate": Flag(aliases=("--lr",))}, title="optimizer")
    return parser


def test_help_is_each_fields_comment_with_its_default(capsys):
    comments = field_comments(Optim)
    assert comments == {
        "learning_rate": "the Adam step size",
        "kind": "Which optimizer.",
        "epochs": "passes over the data",
    }
    assert field_comments(Data)["split"] == "train/validation fractions"  # on a continuation line
    with pytest.raises(SystemExit) as exit_info:
        parse(make_parser(), ["--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--seq-len SEQ_LEN tokens per window (50% overlap) (default: 100)" in out
    assert "--learning-rate LEARNING_RATE, --lr LEARNING_RATE the Adam step size (default: 0.001)" in out
    assert "--kind {adam,sgd} Which optimizer. (default: adam)" in out
    assert "--no-keep-punctuation, --no-punctuation set keep_punctuation to false" in out
    assert "type:" not in out  # argparse's style, not jsonargparse's "(type: int, default: 100)"
    assert "flags typed after it win (default: none)" in out  # every option that takes a value says


def test_defaults_exist_once_in_the_dataclass():
    parser = make_parser()
    defaults = parser.get_defaults()
    fields = config_fields(parser)
    assert {f.dest for f in fields} == {f.name for f in dataclasses.fields(Data)} | {
        f.name for f in dataclasses.fields(Optim)
    }
    for field in fields:
        assert defaults[field.dest] == field.default, field.dest
    cfg, given = parse(parser, [])
    assert instantiate(parser, cfg, Data) == Data() and instantiate(parser, cfg, Optim) == Optim()
    assert given == set()


def test_flags_aliases_switches_and_given_keys():
    parser = make_parser()
    cfg, given = parse(
        parser,
        [
            "--data",
            "a.txt",
            "--lr",
            "nan",
            "--split",
            "90/10",
            "--lowercase",
            "--no-punctuation",
            "--epochs=4",
        ],
    )
    data = instantiate(parser, cfg, Data)
    assert data == Data(path="a.txt", split=(90.0, 10.0), lowercase=True, keep_punctuation=False)
    optim = instantiate(parser, cfg, Optim)
    assert optim.learning_rate != optim.learning_rate and optim.epochs == 4  # NaN reaches the dataclass
    assert given == {"path", "learning_rate", "split", "lowercase", "keep_punctuation", "epochs"}
    cfg, _ = parse(make_parser(), ["--no-keep-punctuation", "--learning-rate", "0.5"])
    assert cfg.keep_punctuation is False and cfg.learning_rate == 0.5


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--seq-len", "abc"], "error: argument --seq-len: invalid int value: 'abc'"),
        (["--kind", "rmsprop"], "error: argument --kind: invalid choice: 'rmsprop'"),
        (["--bogus"], "error: unrecognized arguments: --bogus"),
    ],
)
def test_a_bad_flag_is_one_line_and_exit_2(capsys, argv, expected):
    with pytest.raises(SystemExit) as exit_info:
        parse(make_parser(), argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1 and "Traceback" not in err


def test_a_required_field_names_its_flag(capsys):
    parser = config_parser("prog sample")
    add_dataclass_flags(parser, Needs)
    with pytest.raises(SystemExit):
        parse(parser, ["--top", "3"])
    assert capsys.readouterr().err.startswith("error: the following arguments are required: --model")
    cfg, _ = parse(parser, ["--model", "run"])
    assert instantiate(parser, cfg, Needs) == Needs(model=Path("run"))


@dataclass(frozen=True)
class Report:
    run: Path  # run folder
    out: Path | None = None  # also write the report here
    k: int = 8  # components


def test_a_positional_field_is_an_argument_not_a_flag(tmp_path: Path, capsys):
    parser = config_parser("prog phi")
    add_dataclass_flags(parser, Report, flags={"run": Flag(positional=True, metavar="RUN_DIR")})
    cfg, given = parse(parser, ["--k", "3", "runs/a"])
    assert instantiate(parser, cfg, Report) == Report(run=Path("runs/a"), k=3) and given == {"run", "k"}
    assert [f.option_strings for f in config_fields(parser)][0] == ()
    with pytest.raises(SystemExit):
        parse(parser, ["--k", "3"])
    assert capsys.readouterr().err.startswith("error: the following arguments are required: run")
    saved = tmp_path / "s.yaml"
    saved.write_text(dump_config(parser, cfg))
    assert parse(parser, ["--config", str(saved)])[0].run == Path("runs/a")
    optional = config_parser("prog")
    add_dataclass_flags(optional, Report, flags={"out": Flag(positional=True)}, exclude=("run",))
    assert parse(optional, [])[0].out is None and parse(optional, ["o.json"])[0].out == Path("o.json")
    with pytest.raises(ValueError, match="positional"):
        add_dataclass_flags(config_parser("p"), Data, flags={"lowercase": Flag(positional=True)})


@dataclasses.dataclass
class Sentences:
    sentence: list[str] = dataclasses.field(default_factory=list)  # sentences to read
    limit: int = 0  # at most this many (0 = all)


def test_a_positional_list_field_takes_the_remaining_arguments():
    parser = config_parser("prog formalize")
    add_dataclass_flags(parser, Sentences, flags={"sentence": Flag(positional=True)})
    cfg, given = parse(parser, ["--limit", "2", "Llueve.", "Hace sol."])
    assert instantiate(parser, cfg, Sentences) == Sentences(["Llueve.", "Hace sol."], 2)
    assert given == {"sentence", "limit"}
    assert instantiate(parser, parse(parser, [])[0], Sentences) == Sentences()


def test_config_file_then_flags_and_the_saved_config_loads_back(tmp_path: Path, capsys):
    parser = make_parser()
    settings = tmp_path / "settings.yaml"
    settings.write_text("seq_len: 32\nsplit: [0.5, 0.5]\nlowercase: true\nlearning_rate: 0.01\n")
    cfg, given = parse(parser, ["--config", str(settings), "--lr", "0.02", "--out", "runs/x"])
    assert (cfg.seq_len, cfg.lowercase, cfg.learning_rate) == (32, True, 0.02)
    assert instantiate(parser, cfg, Data).split == (0.5, 0.5)
    assert given == {"seq_len", "split", "lowercase", "learning_rate", "out"}
    saved = tmp_path / "config.yaml"
    text = dump_config(parser, cfg, exclude=("out",))
    assert "out" not in text and "config" not in text and "stride" not in text
    saved.write_text(text)
    again, _ = parse(parser, ["--config", str(saved)])
    assert instantiate(parser, again, Data) == instantiate(parser, cfg, Data)
    assert instantiate(parser, again, Optim) == dataclasses.replace(instantiate(parser, cfg, Optim), out=None)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("seq_len: 1.5\n", "error: argument --seq-len: not an integer: 1.5"),
        ("lowercase: maybe\n", "error: argument --lowercase: not true or false: 'maybe'"),
        ("bogus: 1\n", "error: {path}:1: unknown setting 'bogus' for prog train"),
        ("seq_len: [\n", "error: {path}:2: expected the node content"),
    ],
)
def test_a_bad_config_file_is_one_line_and_exit_2(tmp_path: Path, capsys, yaml_text, expected):
    settings = tmp_path / "bad.yaml"
    settings.write_text(yaml_text)
    with pytest.raises(SystemExit) as exit_info:
        parse(make_parser(), ["--config", str(settings)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(expected.format(path=settings)) and err.count("\n") == 1, err


@dataclass(frozen=True)
class Compiled:
    compile: str = "auto"  # auto | on | off


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [("compile: on\n", "on"), ("compile: false\n", "off"), ("compile: auto\n", "auto")],
)
def test_an_unquoted_on_off_or_an_old_switch_value_in_a_config_file_is_that_choice(
    tmp_path: Path, yaml_text, expected
):
    parser = config_parser("prog train", "Train.")
    add_dataclass_flags(parser, Compiled, flags={"compile": Flag(choices=("auto", "on", "off"), const="on")})
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml_text)
    assert instantiate(parser, parse(parser, ["--config", str(settings)])[0], Compiled).compile == expected
    assert instantiate(parser, parse(parser, ["--compile"])[0], Compiled).compile == "on"


def test_resume_takes_the_saved_settings_not_typed():
    parser = make_parser()
    cfg, given = parse(parser, ["--seq-len", "64"])
    saved = {Data: {"seq_len": 16, "split": [0.6, 0.4], "lowercase": True}, Optim: {"epochs": 9}}
    taken = take_saved_settings(parser, cfg, given, saved)
    assert sorted(taken) == ["epochs", "lowercase", "split"]
    assert (cfg.seq_len, cfg.split, cfg.lowercase, cfg.epochs) == (64, (0.6, 0.4), True, 9)


def test_sections_nest_the_keys(tmp_path: Path):
    parser = config_parser("prog")
    add_dataclass_flags(parser, Optim, "optim")
    add_dataclass_flags(parser, Needs, "needs")
    settings = tmp_path / "s.yaml"
    settings.write_text("optim:\n  epochs: 7\n")
    cfg, given = parse(parser, ["--config", str(settings), "--model", "m"])
    assert instantiate(parser, cfg, Optim, "optim").epochs == 7 and given == {"optim.epochs", "needs.model"}
    assert "optim:\n  learning_rate: 0.001" in dump_config(parser, cfg)


@dataclass
class Model:
    vocab_size: int = 0  # taken from the tokenizer, not a flag
    width: int = 8  # hidden width


@dataclass
class Corpus:
    vocab_size: int = 100  # the tokenizer's cap
    stop: list[str] | None = None  # stop tokens (repeatable)


def test_a_field_is_taken_only_from_its_own_flag_and_lists_repeat(tmp_path: Path):
    parser = config_parser("prog")
    add_dataclass_flags(parser, Corpus)
    add_dataclass_flags(parser, Model, exclude=("vocab_size",))
    cfg, _ = parse(parser, ["--vocab-size", "3", "--stop", "a", "--stop", "\\n"])
    assert instantiate(parser, cfg, Model) == Model()  # Corpus's vocab_size is not Model's
    assert instantiate(parser, cfg, Corpus) == Corpus(vocab_size=3, stop=["a", "\\n"])
    settings = tmp_path / "s.yaml"
    settings.write_text("stop: [x, y]\n")
    cfg, _ = parse(parser, ["--config", str(settings)])
    assert cfg.stop == ["x", "y"]


def test_misuse_is_refused():
    parser = config_parser("prog")
    with pytest.raises(ValueError, match="no field"):
        add_dataclass_flags(parser, Data, flags={"nope": Flag()})
    add_dataclass_flags(parser, Optim)
    with pytest.raises(ValueError, match="already"):
        add_dataclass_flags(parser, Optim)
    with pytest.raises(TypeError):
        add_dataclass_flags(parser, dict)


@dataclass(frozen=True)
class Mix:
    weights: tuple[int, int, int] = (1, 4, 1)  # copy, sum, brackets
    scales: tuple[float, ...] | None = None  # optional per-task scales


def test_nargs_takes_several_values_and_gives_a_tuple(tmp_path: Path, capsys):
    parser = config_parser("prog")
    add_dataclass_flags(
        parser, Mix, flags={"weights": Flag(nargs=3, metavar=("C", "S", "B")), "scales": Flag(nargs=2)}
    )
    cfg, given = parse(parser, ["--weights", "2", "0", "1"])
    assert instantiate(parser, cfg, Mix) == Mix(weights=(2, 0, 1)) and given == {"weights"}
    assert instantiate(parser, parse(parser, [])[0], Mix) == Mix()
    assert instantiate(parser, parse(parser, ["--scales", "0.5", "2"])[0], Mix).scales == (0.5, 2.0)
    saved = tmp_path / "s.yaml"
    saved.write_text(dump_config(parser, cfg))
    assert instantiate(parser, parse(parser, ["--config", str(saved)])[0], Mix) == Mix(weights=(2, 0, 1))
    resumed, _ = parse(parser, [])
    take_saved_settings(parser, resumed, set(), {Mix: {"weights": [3, 3, 3]}})
    assert instantiate(parser, resumed, Mix).weights == (3, 3, 3)
    for argv, message in (
        (["--weights", "1", "2"], "expected 3 arguments"),
        (["--weights", "1", "x", "1"], "invalid int value: 'x'"),
    ):
        with pytest.raises(SystemExit):
            parse(parser, argv)
        assert capsys.readouterr().err.startswith(f"error: argument --weights: {message}")
    with pytest.raises(ValueError, match="nargs"):
        add_dataclass_flags(config_parser("p"), Data, flags={"seq_len": Flag(nargs=2)})


@dataclass(frozen=True)
class Resume:
    resume: str | None = None  # continue the interrupted run (alone: from its last checkpoint)


def test_const_lets_a_flag_go_without_its_value(tmp_path: Path, capsys):
    parser = config_parser("prog")
    add_dataclass_flags(parser, Resume, flags={"resume": Flag(const="last", metavar="PATH")})
    assert instantiate(parser, parse(parser, [])[0], Resume) == Resume()
    cfg, given = parse(parser, ["--resume"])
    assert instantiate(parser, cfg, Resume) == Resume("last") and given == {"resume"}
    assert instantiate(parser, parse(parser, ["--resume", "a.ckpt"])[0], Resume) == Resume("a.ckpt")
    saved = tmp_path / "s.yaml"
    saved.write_text(dump_config(parser, cfg))
    assert instantiate(parser, parse(parser, ["--config", str(saved)])[0], Resume) == Resume("last")
    parser.print_help()
    assert "--resume [PATH]" in capsys.readouterr().out


@dataclass(frozen=True)
class Ablation:
    seeds: tuple[int, ...] = (0,)  # one run per seed


def test_nargs_plus_takes_one_or_more_values(tmp_path: Path, capsys):
    parser = config_parser("prog")
    add_dataclass_flags(parser, Ablation, flags={"seeds": Flag(nargs="+")})
    assert instantiate(parser, parse(parser, [])[0], Ablation) == Ablation()
    cfg, given = parse(parser, ["--seeds", "0", "1", "2"])
    assert instantiate(parser, cfg, Ablation) == Ablation((0, 1, 2)) and given == {"seeds"}
    saved = tmp_path / "s.yaml"
    saved.write_text(dump_config(parser, cfg))
    assert instantiate(parser, parse(parser, ["--config", str(saved)])[0], Ablation).seeds == (0, 1, 2)
    with pytest.raises(SystemExit):
        parse(parser, ["--seeds"])
    assert capsys.readouterr().err.startswith("error: argument --seeds: expected at least one argument")


@dataclass(frozen=True, kw_only=True)
class FillMask:
    run: Path | None = None  # trained run folder
    text: str  # text with a mask


def test_a_positional_field_with_aliases_is_also_a_flag(tmp_path: Path):
    parser = config_parser("prog fill-mask")
    add_dataclass_flags(
        parser,
        FillMask,
        flags={"run": Flag(positional=True, aliases=("--run",)), "text": Flag(positional=True)},
    )
    for argv in (["runs/a", "x"], ["--run", "runs/a", "x"], ["x", "--run", "runs/a"]):
        cfg, given = parse(parser, argv)
        assert instantiate(parser, cfg, FillMask) == FillMask(run=Path("runs/a"), text="x")
        assert given == {"run", "text"}
    assert parse(parser, ["x"])[0].run is None
    assert [f.option_strings for f in config_fields(parser)] == [("--run",), ()]
    assert parser.get_defaults()["run"] is None
    saved = tmp_path / "s.yaml"
    saved.write_text(dump_config(parser, parse(parser, ["runs/a", "x"])[0]))
    assert parse(parser, ["--config", str(saved)])[0].run == Path("runs/a")
    with pytest.raises(ValueError, match="aliases only with a default"):
        add_dataclass_flags(
            config_parser("p"), Needs, flags={"model": Flag(positional=True, aliases=("--m",))}
        )


def test_run_command_dispatches_one_and_two_word_commands(capsys):
    from lm_shared.config_cli import Command, run_command
    from lm_shared.errors import UserError

    seen = []

    def make() -> ConfigParser:
        parser = config_parser("prog x")
        add_dataclass_flags(parser, Sentences, flags={"sentence": Flag(positional=True)})
        return parser

    def record(parser, cfg, given):
        seen.append((instantiate(parser, cfg, Sentences), given))
        return 3

    def fail(parser, cfg, given):
        raise UserError("bad input: line 2")

    commands = {
        "read": Command(make, record, "read sentences"),
        "tiny train": Command(make, record, "train the tiny model"),
        "fail": Command(make, fail, "always fails"),
    }
    assert run_command("prog", "d", commands, ["read", "--limit", "1", "A."]) == 3
    assert run_command("prog", "d", commands, ["tiny", "train", "B."]) == 3
    assert seen == [(Sentences(["A."], 1), {"sentence", "limit"}), (Sentences(["B."]), {"sentence"})]
    assert run_command("prog", "d", commands, ["fail"]) == 2
    assert capsys.readouterr().err == "error: bad input: line 2\n"
    for argv, typed in ((["nope"], "a command, not 'nope'"), (["tiny", "nope"], "a command, not 'tiny nope'"),
                        (["--bogus"], "a command first")):  # fmt: skip
        assert run_command("prog", "d", commands, argv) == 2
        err = capsys.readouterr().err
        assert err == f"error: expected {typed}; choose from read, tiny train, fail (see prog --help)\n"
    with pytest.raises(SystemExit):
        run_command("prog", "d", commands, ["--help"], groups={"tiny": "the tiny model"})
    out = capsys.readouterr().out
    assert "read sentences" in out and "the tiny model" in out
    assert run_command("prog", "d", commands, ["fail"], guard=lambda action: 7) == 7


def test_flag_problems_finds_a_second_default_and_a_hand_made_flag():
    from lm_shared.config_cli import flag_problems

    parser = make_parser()
    assert flag_problems(parser) == []
    parser.add_argument("--extra", type=int, default=1, help="hand-made")
    parser.set_defaults(seq_len=99)
    assert flag_problems(parser) == [
        "--extra: not made from a dataclass field",
        "seq_len: parser default 99, field default 100",
    ]


def test_print_config_writes_paths_and_a_bad_config_file_is_named(tmp_path: Path, capsys):
    parser = config_parser("prog")
    add_dataclass_flags(parser, Report, flags={"run": Flag(positional=True)})
    with pytest.raises(SystemExit) as info:
        parse(parser, ["runs/a", "--print_config"])
    assert info.value.code == 0 and "run: runs/a" in capsys.readouterr().out
    broken = tmp_path / "broken.yaml"
    broken.write_text("k: 3\nout: [a\n")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("k: 3\nbogus: 1\n")
    for path, message in (
        (broken, f"error: {broken}:3: expected ',' or ']'"),
        (unknown, f"error: {unknown}:2: unknown setting 'bogus' for prog"),
        (tmp_path / "missing.yaml", f"error: {tmp_path / 'missing.yaml'}: cannot read the config file"),
    ):
        with pytest.raises(SystemExit) as info:
            parse(parser, ["runs/a", "--config", str(path)])
        err = capsys.readouterr().err
        assert info.value.code == 2 and err.startswith(message) and err.count("\n") == 1, err
