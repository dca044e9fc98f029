"""``tormented-mini`` command line: train | bench | ablate | fill-mask | info.

Every command's flags are the fields of its config dataclasses (``train.TrainConfig`` and the
option dataclasses of :mod:`tormented_mini.options`), made by :mod:`lm_shared.config_cli`: the
help is each field's comment, the default is the field's, ``--config FILE.yaml`` loads settings
(a run's saved ``config.yaml`` among them). The ``Flag`` tables below only say where a flag
departs from its field (earlier spellings, on/off values, choices); the field's own spelling
works too.

``uv run --package tormented-mini train`` runs :func:`train_main` (the same as ``tormented-mini train``).
User errors print ``error: ...`` on stderr and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lm_shared.config_cli import (
    Command,
    ConfigParser,
    Flag,
    add_dataclass_flags,
    config_parser,
    dump_config,
    instantiate,
    program_parser,
    run_command,
)
from tormented_mini.errors import USER_ERRORS, TormentedError
from tormented_mini.options import AblateOptions, BenchOptions, FillMaskOptions, RunOptions


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected on/off, got {text!r}")


_bool.__name__ = "on|off"
MODELS = ("mini", "frankenstein")
SIZES = ("auto", "cpu", "full")


def _on_off(name: str) -> Flag:
    """``--hope on|off`` for ``use_hope`` (``--use-hope`` too): unset keeps the preset's value."""
    return Flag(name=f"--{name}", aliases=(f"--use-{name}",), parse=_bool, metavar="on|off")


def _train_flags() -> dict[str, Flag]:
    from tormented_mini.modeling_tormented import NORM_TYPES
    from tormented_mini.train import PRECISIONS, STRATEGIES

    return {
        "model": Flag(choices=MODELS),
        "size": Flag(choices=SIZES),
        "precision": Flag(choices=PRECISIONS),
        "strategy": Flag(choices=STRATEGIES),
        "compile": Flag(choices=("auto", "on", "off"), const="on"),  # --compile alone: on, as before
        "clip_norm": Flag(name="--grad-clip", aliases=("--clip-norm",)),
        "accumulate_grad_batches": Flag(aliases=("--grad-accum",)),
        "betas": Flag(nargs=2, metavar="BETA"),
        "norm_type": Flag(name="--norm", aliases=("--norm-type",), choices=NORM_TYPES),
        "use_hope": _on_off("hope"),
        "use_bitnet": _on_off("bitnet"),
        "use_moe": _on_off("moe"),
        "use_titan_memory": _on_off("titan-memory"),
        "model_overrides": Flag(metavar="JSON"),
    }


# Not part of a run's saved config.yaml: where it goes, what happens to a run already there, the
# screen, and the --model-config file (its fields are saved in model_overrides).
RUN_KEYS = ("out", "resume", "force", "progress", "model_config")


# ==================================================================================== train
def _train_parser(prog: str = "tormented-mini train") -> ConfigParser:
    from tormented_mini.train import TrainConfig

    parser = config_parser(prog, "Pre-train a Tormented-BERT masked LM.")
    add_dataclass_flags(parser, TrainConfig, flags=_train_flags(), title="training settings")
    add_dataclass_flags(parser, RunOptions, title="run folder")
    return parser


def _model_overrides(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    file = Path(path)
    try:
        overrides = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TormentedError(f"{file}: model config file not found") from None
    except json.JSONDecodeError as exc:
        raise TormentedError(f"{file}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(overrides, dict):
        raise TormentedError(f"{file}: expected a JSON object of UltraConfig fields")
    return overrides


def run_train(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    from rich.console import Console

    from tormented_mini.modeling_tormented import UltraConfig
    from tormented_mini.train import MLMTrainer, TrainConfig, resume_config

    run = instantiate(parser, cfg, RunOptions)
    overrides = {**(cfg.model_overrides or {}), **_model_overrides(run.model_config)}
    config = instantiate(parser, cfg, TrainConfig, model_overrides=overrides)
    if run.resume:
        config = resume_config(config.out, config)
    if config.model_overrides:
        UltraConfig.frankenstein_cpu(**config.model_overrides)  # validates field names and values early
    for name, value in vars(config).items():  # config.yaml says what ran (a resumed run's own settings)
        cfg[name] = list(value) if isinstance(value, tuple) else value
    console = Console(stderr=True)
    trainer = MLMTrainer(
        config,
        resume=run.resume,
        force=run.force,
        progress=run.progress,
        command_config=dump_config(parser, cfg, exclude=RUN_KEYS),
    )
    mc = trainer.model_config
    n_params = sum(p.numel() for p in trainer.model.parameters())
    console.print(
        f"[bold]{config.model}[/] ({config.preset_name(trainer.device)}): hidden {mc.hidden_size}, {mc.num_layers} layers x "
        f"{mc.num_loops} loops, {n_params / 1e6:.2f}M params, norm {mc.norm_type}, bitnet {mc.use_bitnet}, "
        f"vocab {mc.vocab_size}, device {trainer.device}, precision {trainer.precision}, "
        f"{trainer.corpus.train.shape[0]} train / {trainer.corpus.val.shape[0]} held-out rows; "
        f"torch.compile: {trainer.compiled.reason}"
    )
    if trainer.resume_state is not None:
        step = int(trainer.resume_state.get("global_step", 0))
        console.print(f"resuming at step {step} of {config.max_steps} from {trainer.checkpoint_path}")
    result = trainer.run()
    console.print(
        f"step {result.steps}: held-out MLM loss {result.val_mlm_loss:.4f}, masked-token accuracy "
        f"{result.val_masked_acc:.4f}, {result.seconds_per_step:.3f} s/step after the first "
        f"({result.first_step_seconds:.1f} s), saved to {result.out}"
    )
    if result.stopped:
        console.print(f"[red]training stopped:[/] {result.stop_reason}")
        return 1
    return 0


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``uv run --package tormented-mini train`` and ``tormented-mini train``."""
    return main(["train", *(sys.argv[1:] if argv is None else argv)])


# ==================================================================================== others
def run_fill_mask(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    from lm_shared.runs import require_run_of

    args = instantiate(parser, cfg, FillMaskOptions)
    if args.run is None:
        raise TormentedError("name the trained run: tormented-mini fill-mask RUN TEXT (or --run RUN)")
    folder = args.run
    require_run_of(folder, "tormented-mini")  # another member's run folder is named as such
    if not (folder / "config.json").is_file():
        raise TormentedError(
            f"{folder}: not a model folder (no config.json); train one with `tormented-mini train`"
        )
    weights = folder / "model.safetensors"
    if weights.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(weights), framework="pt") as handle:
                handle.keys()
        except Exception as exc:
            raise TormentedError(
                f"{weights}: damaged or not a safetensors file ({type(exc).__name__}); train it again with --force"
            ) from None
    try:
        model = AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as exc:  # a truncated or foreign file: name it in one line
        name = next(
            (n for n in ("model.safetensors", "tokenizer.json", "config.json") if n in str(exc)), None
        )
        what = f"{folder / name}: damaged" if name else f"{folder}: cannot load the model"
        raise TormentedError(f"{what} ({type(exc).__name__}); train it again with --force") from None
    if tokenizer.mask_token not in args.text:
        raise TormentedError(f"the text must contain {tokenizer.mask_token}")
    fill = pipeline("fill-mask", model=model, tokenizer=tokenizer, top_k=args.top_k)
    results = fill(args.text)
    if results and isinstance(results[0], list):
        results = [r for group in results for r in group]
    for r in results:
        print(f"{r['score']:.4f}  {r['token_str'].strip()!r:20}  {r['sequence']}")
    return 0


def run_info(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table

    from tormented_mini.modeling_tormented import PRESETS, TormentedBertConfig, TormentedBertForMaskedLM

    table = Table(title="Tormented-BERT presets")
    for column in ("preset", "hidden", "layers x loops", "pattern", "norm", "bitnet", "params (M)"):
        table.add_column(column)
    for name, make in PRESETS.items():
        config = make()
        with torch.device("meta"):
            model = TormentedBertForMaskedLM(TormentedBertConfig.from_ultra(config))
        n = sum(p.numel() for p in model.parameters())
        table.add_row(
            name,
            str(config.hidden_size),
            f"{config.num_layers} x {config.num_loops}",
            ",".join(config.layer_pattern),
            config.norm_type,
            str(config.use_bitnet),
            f"{n / 1e6:.2f}",
        )
    Console().print(table)
    return 0


def run_bench(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    from tormented_mini import bench

    return bench.run(instantiate(parser, cfg, BenchOptions))


def run_ablate(parser: ConfigParser, cfg: Any, given: set[str]) -> int:
    from tormented_mini import ablate

    return ablate.run(instantiate(parser, cfg, AblateOptions), dump_config(parser, cfg))


def _bench_parser(prog: str = "tormented-mini bench") -> ConfigParser:
    parser = config_parser(
        prog, "Step time and peak memory of Mini vs Frankenstein, and per-block fwd+bwd time."
    )
    flags = {"size": Flag(choices=SIZES), "bf16": Flag(help="skip the bf16-autocast measurement")}
    add_dataclass_flags(parser, BenchOptions, flags=flags)
    return parser


def _ablate_parser(prog: str = "tormented-mini ablate") -> ConfigParser:
    parser = config_parser(
        prog, "dynamic_tanh vs DyT vs Derf (vs LayerNorm), and HoPE on/off, same steps and data."
    )
    add_dataclass_flags(
        parser, AblateOptions, flags={"model": Flag(choices=MODELS), "seeds": Flag(nargs="+")}
    )
    return parser


def _fill_mask_parser(prog: str = "tormented-mini fill-mask") -> ConfigParser:
    parser = config_parser(prog, "Fill [MASK] with a trained run (transformers fill-mask pipeline).")
    flags = {"run": Flag(positional=True, aliases=("--run",), metavar="RUN"), "text": Flag(positional=True)}
    add_dataclass_flags(parser, FillMaskOptions, flags=flags)
    return parser


def _info_parser(prog: str = "tormented-mini info") -> ConfigParser:
    return ConfigParser(prog=prog, description="Parameter counts of the presets.")


# name -> (parser, what it runs, help line in `tormented-mini --help`)
COMMANDS: dict[str, Command] = {
    "train": Command(
        _train_parser,
        run_train,
        "pre-train a masked LM (same as `uv run --package tormented-mini train`)",
    ),
    "bench": Command(
        _bench_parser,
        run_bench,
        "step time and peak memory of Mini vs Frankenstein, and per-block fwd+bwd time",
    ),
    "ablate": Command(
        _ablate_parser,
        run_ablate,
        "dynamic_tanh vs DyT vs Derf, and HoPE on/off, same steps and data",
    ),
    "fill-mask": Command(
        _fill_mask_parser, run_fill_mask, "fill [MASK] with a trained run (transformers pipeline)"
    ),
    "info": Command(_info_parser, run_info, "parameter counts of the presets"),
}


DESCRIPTION = "Hybrid masked-LM encoder: train, benchmark, ablate."


def build_parser() -> argparse.ArgumentParser:
    """``tormented-mini``'s own parser: the list of commands (each command parses its own flags)."""
    return program_parser("tormented-mini", DESCRIPTION, COMMANDS)


def _guard(action: Callable[[], int]) -> int:
    """:func:`lm_shared.runs.run_guarded`, with the libraries' input errors as one-line user errors."""
    from lm_shared.runs import run_guarded

    def checked() -> int:
        try:
            return action()
        except USER_ERRORS as exc:
            raise TormentedError(str(exc)) from None

    return run_guarded(checked)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; a user error is one ``error: ...`` line (exit 2), Ctrl-C one line (exit 130)."""
    return run_command("tormented-mini", DESCRIPTION, COMMANDS, argv, guard=_guard)


if __name__ == "__main__":
    raise SystemExit(main())
