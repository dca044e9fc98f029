"""Trainer tests: HF folder end to end, NaN/Inf skips, stop-and-checkpoint, exact resume, bad input."""

import json

import lightning as L
import pytest
import torch

from lm_shared.runs import NonFiniteError, RunFolderError, RunLockedError
from tormented_mini.cli import main
from tormented_mini.errors import CheckpointError
from tormented_mini.train import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    MLMTrainer,
    TrainConfig,
    resume_config,
    warmup_cosine,
)

TINY_MODEL = dict(
    hidden_size=32,
    num_heads=2,
    retention_heads=2,
    embedding_size=16,
    num_experts=2,
    mamba_state_size=4,
    ode_steps=1,
)
LAST = f"{CHECKPOINT_DIR}/{LAST_CHECKPOINT}"


def tiny(tmp_path, name="run", **overrides):
    base = dict(
        out=str(tmp_path / name),
        size="cpu",
        max_steps=6,
        eval_every=3,
        eval_batches=2,
        batch_size=4,
        seq_len=32,
        vocab_size=400,
        warmup_steps=2,
        threads=1,
        model_overrides=dict(TINY_MODEL),
    )
    base.update(overrides)
    return TrainConfig(**base)


def small_corpus(tmp_path, n=40):
    """A corpus of ~n short paragraphs: a few training steps make an epoch."""
    path = tmp_path / "small.txt"
    words = ["la casa", "el perro", "los niños", "las flores", "un gato", "una mesa"]
    lines = [f"{words[i % 6]} es bonita y {words[(i * 5) % 6]} duerme en la plaza {i}." for i in range(n)]
    path.write_text("\n\n".join(lines), encoding="utf-8")
    return path


def records(out, name="stability.jsonl"):
    return [json.loads(line) for line in (out / name).read_text().splitlines()]


def weights(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def assert_same(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0 if atol == 0 else 1e-5, atol=atol)


class Crash(L.Callback):
    """Ends the process's work at the end of step ``at`` as a kill would: nothing after it runs."""

    def __init__(self, at):
        self.at = at

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.at:
            raise SystemError(f"simulated kill at step {self.at}")


class Poison(L.Callback):
    """Sets one embedding gradient to ``value`` on the given backward passes (1-based)."""

    def __init__(self, value, calls):
        self.value, self.calls, self.n = value, calls, 0

    def on_train_start(self, trainer, pl_module):
        def hook(grad):
            self.n += 1
            return torch.full_like(grad, self.value) if self.calls(self.n) else grad

        pl_module.model.tormented.embeddings.word_embeddings.weight.register_hook(hook)


def test_train_writes_a_hugging_face_folder_ready_for_fill_mask(tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    trainer = MLMTrainer(tiny(tmp_path), progress=False)
    result = trainer.run()
    out = tmp_path / "run"
    assert result.steps == 6 and not result.stopped
    assert result.val_mlm_loss == result.val_mlm_loss  # not NaN
    for name in (
        "config.json",
        "model.safetensors",
        "modeling_tormented.py",
        "tokenizer.json",
        "train_config.json",
        LAST,
    ):
        assert (out / name).is_file(), name
    # every file as readable as config.json (safetensors alone made model.safetensors 0600)
    assert (out / "model.safetensors").stat().st_mode & 0o777 == (out / "config.json").stat().st_mode & 0o777
    assert any((out / "tb").iterdir())
    steps = records(out)
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert {"grad_norm", "has_nan", "has_inf", "repair_action", "loss", "lr"} <= steps[0].keys()
    assert [m["step"] for m in records(out, "metrics.jsonl")] == [3, 6]
    run = json.loads((out / "run.json").read_text())
    assert run["compiled"] is result.compiled and run["compile_reason"] == result.compile_reason
    # the first step (torch.compile's, when compiled) is reported apart from the others
    assert 0 < run["first_step_seconds"] == result.first_step_seconds < result.train_seconds
    assert run["seconds_per_step"] == pytest.approx((result.train_seconds - result.first_step_seconds) / 5)
    model = AutoModelForMaskedLM.from_pretrained(out, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.mask_token == "[MASK]" and tokenizer.mask_token_id == trainer.ids.mask
    encoded = tokenizer("El gato duerme.")["input_ids"]
    assert encoded[0] == trainer.ids.cls and encoded[-1] == trainer.ids.sep
    # " [MASK]" swallows its space, so the input has no stray space token before the mask.
    with_mask = tokenizer.convert_ids_to_tokens(tokenizer("El gato [MASK] en la plaza.")["input_ids"])
    assert with_mask[with_mask.index("[MASK]") - 1] != "Ġ"
    fill = pipeline("fill-mask", model=model, tokenizer=tokenizer, top_k=3)
    predictions = fill("El gato [MASK] en la plaza.")
    assert len(predictions) == 3 and all("[MASK]" not in p["sequence"] for p in predictions)


def test_accumulation_gives_the_same_steps_as_one_batch(tmp_path):
    # Dense FFN: the MoE balance loss is not additive over micro-batches. Adam amplifies float
    # noise in near-zero gradients (its update is ~lr * sign(g) whatever |g|), and batched matmuls
    # sum in a batch-size-dependent order, so after the first update the two runs drift apart at
    # the 1e-3 level in gradient norm: the first step's gradient (the accumulated one against the
    # whole batch's) is compared tightly, the losses of every step loosely.
    kw = dict(max_steps=3, eval_every=3, use_moe=False)
    MLMTrainer(tiny(tmp_path, "a", **kw), progress=False).run()
    MLMTrainer(tiny(tmp_path, "b", accumulate_grad_batches=2, **kw), progress=False).run()
    a, b = records(tmp_path / "a"), records(tmp_path / "b")
    assert b[0]["grad_norm"] == pytest.approx(a[0]["grad_norm"], rel=1e-5)
    assert [r["mlm_loss"] for r in b] == pytest.approx([r["mlm_loss"] for r in a], rel=1e-4)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_nonfinite_gradient_is_skipped_and_the_batch_retried_at_half_the_lr(tmp_path, value):
    trainer = MLMTrainer(tiny(tmp_path, max_steps=4, eval_every=4), progress=False)
    module = trainer.module
    seen = []
    original = module._micro_loss

    def probe(batch):
        opt = module.optimizers(use_pl_optimizer=False)
        state = {
            (i, k): v.clone()
            for i, s in opt.state_dict()["state"].items()
            for k, v in s.items()
            if torch.is_tensor(v)
        }
        seen.append((int(batch["step"]), weights(trainer), state, module.lr_schedulers().last_epoch))
        return original(batch)

    module._micro_loss = probe
    trainer.run(extra_callbacks=[Poison(value, lambda n: n == 3)])
    steps = [s for s, *_ in seen]
    assert steps == [0, 1, 2, 2, 3]  # step 2's batch ran twice
    (_, w1, o1, s1), (_, w2, o2, s2) = seen[2], seen[3]
    assert_same(w1, w2)  # the skipped attempt left parameters,
    assert_same(o1, o2)  # AdamW moments and step counts,
    assert s1 == s2  # and the LR schedule untouched
    actions = [r["repair_action"] for r in records(tmp_path / "run")]
    assert actions[2] == "skip" and actions[3] == "lr_halved" and len(actions) == 5
    log = records(tmp_path / "run")
    assert log[2]["has_nan"] or log[2]["has_inf"]
    # lr after the u-th update is lr * factor(u); the halving lasts for every later step.
    factor = warmup_cosine(trainer.cfg)
    lrs = [trainer.cfg.lr * f for f in (factor(1), factor(2), factor(2), 0.5 * factor(3), 0.5 * factor(4))]
    assert [r["lr"] for r in log] == pytest.approx(lrs, rel=1e-6)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_persistent_failure_stops_with_a_finite_checkpoint_and_model(tmp_path, value):
    trainer = MLMTrainer(tiny(tmp_path), progress=False)
    result = trainer.run(extra_callbacks=[Poison(value, lambda n: n >= 2)])
    out = tmp_path / "run"
    assert result.stopped and "non-finite" in result.stop_reason and result.steps == 2
    actions = [r["repair_action"] for r in records(out)]
    assert actions[0] in ("none", "clip") and actions[-1] == "stop" and len(actions) == 1 + 4
    saved = torch.load(out / LAST, weights_only=False)
    assert saved["global_step"] == 2
    after_first = saved["state_dict"]
    assert all(torch.isfinite(v).all() for v in after_first.values())
    assert (out / "model.safetensors").is_file()


def test_nonfinite_parameters_stop_without_saving_a_model(tmp_path):
    class Corrupt(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            if trainer.global_step == 2:
                with torch.no_grad():
                    pl_module.model.tormented.embeddings.word_embeddings.weight.fill_(float("nan"))

    trainer = MLMTrainer(tiny(tmp_path, eval_every=1), progress=False)
    with pytest.raises(NonFiniteError, match="NaN/Inf"):
        trainer.run(extra_callbacks=[Corrupt()])
    out = tmp_path / "run"
    assert not (out / "model.safetensors").exists()
    saved = torch.load(out / LAST, weights_only=False)
    assert saved["global_step"] == 1
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())


@pytest.mark.parametrize("kill_at,every", [(5, 3), (5, 4)], ids=["mid-epoch", "end-of-epoch"])
def test_resume_after_a_crash_matches_the_uninterrupted_run(tmp_path, kill_at, every):
    data = str(small_corpus(tmp_path))
    straight = MLMTrainer(tiny(tmp_path, "a", data=data, eval_every=every), progress=False)
    # 4 steps an epoch: checkpoints at 3 (mid-epoch) or 4 (end of epoch); both runs cross epochs.
    assert straight.datamodule.steps_per_epoch == 4
    straight.run()
    crashed = MLMTrainer(tiny(tmp_path, "b", data=data, eval_every=every), progress=False)
    with pytest.raises(SystemError):
        crashed.run(extra_callbacks=[Crash(kill_at)])
    # Extra callbacks run first: the crash ends step 5 before its record is written. Mid-epoch
    # (checkpoint at 3) the log ran past the last checkpoint.
    assert len(records(tmp_path / "b")) == kill_at - 1
    cfg = resume_config(tmp_path / "b", tiny(tmp_path, "b"))
    assert cfg.data == data  # --resume without --data reuses the run's own data
    resumed = MLMTrainer(cfg, resume=True, progress=False)
    resumed.run()
    assert_same(weights(resumed), weights(straight))
    a, b = records(tmp_path / "a"), records(tmp_path / "b")
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]  # true step numbers, no duplicates
    assert [r["loss"] for r in b] == [r["loss"] for r in a]
    assert records(tmp_path / "b", "metrics.jsonl") == records(tmp_path / "a", "metrics.jsonl")


def test_resume_refuses_other_models_other_data_and_finished_runs(tmp_path, capsys):
    crashed = MLMTrainer(tiny(tmp_path, eval_every=1), progress=False)
    with pytest.raises(SystemError):
        crashed.run(extra_callbacks=[Crash(2)])
    out = tmp_path / "run"
    with pytest.raises(RunFolderError, match=r"interrupted run \(last checkpoint at step 1\).*--resume"):
        MLMTrainer(tiny(tmp_path), progress=False)
    with pytest.raises(RunFolderError, match="model"):
        MLMTrainer(tiny(tmp_path, model="frankenstein"), resume=True, progress=False)
    with pytest.raises(CheckpointError, match="data is"):
        resume_config(out, tiny(tmp_path, data=str(small_corpus(tmp_path))))
    code = main(["train", "--out", str(out), "--resume", "--no-progress"])
    assert code == 0
    code = main(["train", "--out", str(out), "--resume", "--no-progress"])
    assert code == 2 and "already finished" in capsys.readouterr().err


def test_a_damaged_checkpoint_is_named_in_one_line(tmp_path, capsys):
    crashed = MLMTrainer(tiny(tmp_path, eval_every=1), progress=False)
    with pytest.raises(SystemError):
        crashed.run(extra_callbacks=[Crash(2)])
    (tmp_path / "run" / LAST).write_bytes(b"not a checkpoint")
    code = main(["train", "--out", str(tmp_path / "run"), "--resume", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "last.ckpt" in err and len(err.splitlines()) == 1


def test_a_second_training_into_the_same_folder_is_refused(tmp_path):
    first = MLMTrainer(tiny(tmp_path), progress=False)
    try:
        with pytest.raises(RunLockedError, match=str(__import__("os").getpid())):
            MLMTrainer(tiny(tmp_path), progress=False)
    finally:
        first.close()


def test_force_replaces_a_finished_run_only_when_the_new_one_finishes(tmp_path):
    MLMTrainer(tiny(tmp_path, max_steps=2, eval_every=2), progress=False).run()
    with pytest.raises(RunFolderError, match="finished run"):
        MLMTrainer(tiny(tmp_path, max_steps=3, eval_every=3), progress=False)
    forced = MLMTrainer(tiny(tmp_path, max_steps=3, eval_every=3), force=True, progress=False)
    with pytest.raises(SystemError):
        forced.run(extra_callbacks=[Crash(1)])
    assert [r["step"] for r in records(tmp_path / "run")] == [1, 2]  # the finished run is intact
    again = MLMTrainer(tiny(tmp_path, max_steps=3, eval_every=3), force=True, progress=False)
    assert again.run().out == tmp_path / "run"
    assert [r["step"] for r in records(tmp_path / "run")] == [1, 2, 3]


def test_checkpoints_do_not_depend_on_compile(tmp_path, monkeypatch):
    real_compile = torch.compile
    compiled = []

    def eager_backend_compile(model, **kw):
        compiled.append(kw)
        return real_compile(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_backend_compile)
    from lm_shared import runtime

    monkeypatch.setattr(runtime, "compile_backend", lambda device: "g++")  # not needed by the eager backend
    with pytest.raises(SystemError):
        MLMTrainer(tiny(tmp_path, eval_every=1, compile=True), progress=False).run(extra_callbacks=[Crash(2)])
    # A config saved when --compile was a switch reads true as on; the CPU keeps eager random numbers.
    assert compiled == [{"options": {"fallback_random": True}}]
    keys = torch.load(tmp_path / "run" / LAST, weights_only=False)["state_dict"].keys()
    assert not any("_orig_mod" in k for k in keys)
    with pytest.raises(SystemError):  # saved compiled, resumed plain
        MLMTrainer(tiny(tmp_path, eval_every=1), resume=True, progress=False).run(extra_callbacks=[Crash(3)])
    # saved plain, resumed compiled
    again = MLMTrainer(tiny(tmp_path, eval_every=1, compile=True), resume=True, progress=False)
    assert again.run().steps == 6


def test_compile_is_auto_by_default_and_on_without_a_compiler_is_refused_before_any_work(
    tmp_path, monkeypatch
):
    from lm_shared import runtime
    from tormented_mini.errors import TormentedError

    short = MLMTrainer(tiny(tmp_path, name="short"), progress=False)
    assert short.cfg.compile == "auto" and not short.compiled.enabled  # 6 steps: eager
    assert short.compiled.reason == "auto: 6 steps are too few to repay compiling, eager"
    short.run_folder.release()
    monkeypatch.setattr(runtime, "compile_backend", lambda device: None)
    with pytest.raises(
        TormentedError, match=r"compile on: torch.compile cannot build kernels on cpu .*--compile off"
    ):
        MLMTrainer(tiny(tmp_path, compile="on"), progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(TormentedError, match="--compile must be one of auto, on, off, got 'yes'"):
        tiny(tmp_path, compile="yes")


@pytest.mark.parametrize(
    "setup,needle",
    [
        (lambda d: ["--data", str(d / "missing.txt")], "no such file"),
        (lambda d: (d / "empty.txt").write_text("\n\n  \n") and ["--data", str(d / "empty.txt")], "empty"),
        (
            lambda d: (
                (d / "m.json").write_text('{"layer_pattern": ["retnet", "lstm"]}')
                and ["--model-config", str(d / "m.json")]
            ),
            "layer_pattern[1]",
        ),
        (
            lambda d: (
                (d / "m.json").write_text('{"norm_type": "rmsnorm"}')
                and ["--model-config", str(d / "m.json")]
            ),
            "norm_type",
        ),
        (
            lambda d: (
                (d / "m.json").write_text('{"hidden_size": 130}') and ["--model-config", str(d / "m.json")]
            ),
            "not divisible",
        ),
        (
            lambda d: (d / "m.json").write_text("{bad json") and ["--model-config", str(d / "m.json")],
            "line 1",
        ),
        (lambda d: ["--lr", "nan"], "--lr"),
        (lambda d: ["--batch-size", "0"], "--batch-size"),
        (lambda d: ["--max-steps", "-5"], "--max-steps"),
        (lambda d: ["--vocab-size", "10"], "--vocab-size"),
        (lambda d: ["--batch-size", "6", "--accumulate-grad-batches", "4"], "multiple"),
        (lambda d: ["--strategy", "fsdp"], "fsdp"),
        (lambda d: ["--devices", "two"], "--devices"),
    ],
)
def test_bad_input_fails_before_training(tmp_path, capsys, setup, needle):
    args = setup(tmp_path)
    code = main(["train", "--out", str(tmp_path / "never"), "--max-steps", "1", "--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and needle in err
    assert not (tmp_path / "never").exists()
