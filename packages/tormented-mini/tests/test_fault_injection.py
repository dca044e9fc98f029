"""tormented-mini's Lightning trainer against lm_shared's fault-injection kit (issue 15, a-g + DDP).

The adapter runs what ``tormented-mini train`` runs (:func:`~tormented_mini.train.resume_config` on
``--resume``, then :class:`~tormented_mini.train.MLMTrainer`: the run-folder policy, the
LightningModule with manual optimisation through the lm_shared health monitor, checkpoints,
TensorBoard) with the ``mini-cpu`` preset shrunk to hidden size 32 on a generated corpus of
4 optimizer steps an epoch.

tormented's repair re-runs a batch inside one ``training_step``: a skipped attempt is followed by
a retry of the same batch (at half the LR; after the fp16 scaler's own overflow at its lowered
scale), so every training batch ends with an applied update. The kit's batch-level checks (a)-(d)
compare the state around a batch whose update was skipped; here the skipped attempt is checked
instead, with the kit's :class:`~lm_shared.testing.AttemptRecorder`: the state when the retry
starts equals the state before the skipped attempt, except for the repair itself. (e), (f), (g) and
the DDP check are the kit's own.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
from pathlib import Path

import pytest

pytest.importorskip("lightning")

from lm_shared import testing as kit  # noqa: E402

ADAPTER = (__file__, "make_adapter")
BATCH = 4  # tormented's batch_size is the global batch (over devices and micro-batches)
STEPS_PER_EPOCH = 4  # 40 short paragraphs packed into 32-token rows: 16 training rows
TINY_MODEL = dict(
    hidden_size=32,
    num_heads=2,
    retention_heads=2,
    embedding_size=16,
    num_experts=2,
    mamba_state_size=4,
    ode_steps=1,
)


def _corpus(root: Path) -> Path:
    """A small generated corpus, written once per test directory (DDP ranks may ask together)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "corpus.txt"
    with open(root / ".corpus.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            words = ["la casa", "el perro", "los niños", "las flores", "un gato", "una mesa"]
            lines = [
                f"{words[i % 6]} es bonita y {words[(i * 5) % 6]} duerme en la plaza {i}." for i in range(40)
            ]
            path.write_text("\n\n".join(lines), encoding="utf-8")
    return path


@contextlib.contextmanager
def _eager_compile(enabled: bool):
    """``torch.compile`` with the eager backend: the real wrapper (the one that adds ``_orig_mod.``
    to state-dict keys when registered), without minutes of C++ kernel builds on a small CPU."""
    import torch

    if not enabled:
        yield
        return
    real = torch.compile
    torch.compile = lambda model, **kw: real(model, backend="eager")
    try:
        yield
    finally:
        torch.compile = real


class TormentedAdapter:
    def fit(self, run_dir, *, max_steps, callbacks=(), resume=False, **options):
        from tormented_mini.train import MLMTrainer, TrainConfig, resume_config

        run_dir = Path(run_dir)
        corpus = _corpus(run_dir.parent)
        scheduler = options.pop("scheduler", "lambda")
        if scheduler not in ("lambda", "cosine"):
            raise kit.Unsupported(
                f"tormented-mini's only LR schedule is linear warmup + cosine (a LambdaLR); no {scheduler!r}"
            )
        if options.pop("ema_decay", 0.0):
            raise kit.Unsupported("tormented-mini keeps no EMA of the weights")
        every = options.pop("checkpoint_every_n_steps", 0) or max_steps
        compile_model = options.pop("compile", False)
        # The MoE balance loss is averaged over the ranks' halves of a batch, not taken over the
        # whole batch: off for a DDP vs one-process comparison of the logged loss.
        moe = options.pop("moe", True)
        cfg = TrainConfig(
            out=str(run_dir),
            data=str(corpus),
            size="cpu",
            max_steps=max_steps,
            eval_every=every,  # checkpoints and evaluations share the cadence
            eval_batches=1,
            batch_size=BATCH,
            accumulate_grad_batches=options.pop("accumulate_grad_batches", 1),
            seq_len=32,
            vocab_size=400,
            warmup_steps=2,
            threads=1,
            compile=compile_model,
            devices=str(options.pop("devices", 1)),
            strategy=options.pop("strategy", "auto"),
            use_moe=None if moe else False,
            model_overrides=dict(TINY_MODEL),
        )
        plugins = options.pop("plugins", [])
        assert not options, f"unknown options {options}"
        if resume:
            cfg = resume_config(cfg.out, cfg)
        trainers = []

        import lightning as L

        class Keep(L.Callback):
            def on_fit_start(self, trainer, pl_module):
                trainers.append(trainer)

        with _eager_compile(compile_model):
            MLMTrainer(cfg, resume=resume, progress=False, precision_plugins=plugins).run(
                extra_callbacks=[*callbacks, Keep()]
            )
        return trainers[-1]


def make_adapter():
    return TormentedAdapter()


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "stability.jsonl").read_text().splitlines()]


def _with_lr_scaled(state: dict, factor: float) -> dict:
    """``state`` after :func:`lm_shared.stability.scale_lr`: every group's LR and the schedule's bases."""
    out = copy.deepcopy(state)
    for optimizer in out["optimizers"]:
        for group in optimizer["param_groups"]:
            for key in ("lr", "initial_lr"):
                if key in group:
                    group[key] = group[key] * factor
    for scheduler in out["schedulers"]:
        for key in ("base_lrs", "_last_lr"):
            if key in scheduler:
                scheduler[key] = [v * factor for v in scheduler[key]]
    return out


def _faulted_run(tmp_path, fault, *, max_steps, **options):
    states, attempts = kit.StateRecorder(), kit.AttemptRecorder()
    trainer = make_adapter().fit(
        tmp_path / "run", max_steps=max_steps, callbacks=[fault, states, attempts], **options
    )
    i = fault.fired_at_batch
    assert i is not None, f"the run never reached optimizer step {fault.at_step}"
    return trainer, states, attempts.attempts[i], i


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_a_nonfinite_attempt_leaves_the_whole_state_unchanged(tmp_path, kind):
    fault = kit.GradientFault(2, kind)
    trainer, states, tried, i = _faulted_run(tmp_path, fault, max_steps=5)
    assert len(tried) == 2, "the batch was not run again after the skipped attempt"
    kit.assert_same_state(states.before[i], tried[0], "the first attempt's forward")
    # Parameters, AdamW moments and step counts, the schedule and global_step are where they were;
    # only the repair moved: the LR (groups and schedule bases) halved for the retry.
    kit.assert_same_state(_with_lr_scaled(tried[0], 0.5), tried[1], f"{kind} gradient at step 2")
    assert states.after[i]["global_step"] == 3 and trainer.global_step == 5
    assert kit.state_differences(states.before[i]["module"], states.after[i]["module"])
    log = _records(tmp_path / "run")
    skipped = [n for n, r in enumerate(log) if r["repair_action"] == "skip"]
    assert len(skipped) == 1 and log[skipped[0]]["has_nan" if kind == "nan" else "has_inf"]
    assert log[skipped[0] + 1]["repair_action"] == "lr_halved" and len(log) == 6


def test_b_overflowing_norm_under_fp16_is_skipped_and_the_batch_runs_again(tmp_path):
    # Finite gradients whose global norm overflows, after the scaler's unscale_: the model's
    # failure, not fp16's. The scale stays; the batch runs again at half the LR.
    fault = kit.GradientFault(2, "overflow")
    plugin = kit.fp16_cpu_amp_plugin()
    trainer, states, tried, i = _faulted_run(tmp_path, fault, max_steps=4, plugins=[plugin])
    assert len(tried) == 2 and tried[0]["grad_scaler"] is not None
    kit.assert_same_state(
        _with_lr_scaled(tried[0], 0.5),
        tried[1],
        "overflowing norm at step 2",
        ignore=("grad_scaler._growth_tracker",),
    )
    assert states.after[i]["global_step"] == 3 and trainer.global_step == 4
    assert kit.state_differences(states.before[i]["module"], states.after[i]["module"])
    # The fault's batch is the third of four: its two records come before the last batch's one.
    # (Earlier records may hold the scaler's first overflows, retried at a lower scale.)
    skipped, retry, last = _records(tmp_path / "run")[-3:]
    assert skipped["repair_action"] == "skip" and skipped["grad_norm"] == float("inf")
    assert not (skipped["has_nan"] or skipped["has_inf"])  # finite gradients, overflowing norm
    assert retry["repair_action"] == "lr_halved" and last["repair_action"] in ("none", "clip")


def test_b_fp16_overflow_is_the_scalers_to_repair(tmp_path):
    # Inf in the scaled gradients (before unscale_): the scaler halves its scale and the batch
    # runs again at that scale, the LR untouched.
    fault = kit.GradientFault(2, "inf")
    plugin = kit.fp16_cpu_amp_plugin()
    trainer, states, tried, i = _faulted_run(tmp_path, fault, max_steps=4, plugins=[plugin])
    assert len(tried) == 2
    expected = copy.deepcopy(tried[0])
    expected["grad_scaler"]["scale"] = tried[0]["grad_scaler"]["scale"] * 0.5
    kit.assert_same_state(
        expected, tried[1], "fp16 overflow at step 2", ignore=("grad_scaler._growth_tracker",)
    )
    assert states.after[i]["global_step"] == 3 and trainer.global_step == 4
    skipped, retry, last = _records(tmp_path / "run")[-3:]
    assert skipped["repair_action"] == "skip" and skipped["has_inf"]
    assert retry["repair_action"] in ("none", "clip")  # no LR halving: the state check above


def test_c_lr_repair_lasts(tmp_path):
    ref = kit.StateRecorder()
    make_adapter().fit(tmp_path / "ref", max_steps=7, callbacks=[ref])
    trainer, states, tried, i = _faulted_run(tmp_path, kit.GradientFault(2, "nan"), max_steps=7)
    assert trainer.datamodule.steps_per_epoch == STEPS_PER_EPOCH  # (e) kills mid-epoch and at its end

    def lrs(state):
        return [g["lr"] for opt in state["optimizers"] for g in opt["param_groups"]]

    want = {s["global_step"]: lrs(s) for s in ref.after.values()}
    got = {s["global_step"]: lrs(s) for s in states.after.values()}
    assert sorted(got) == sorted(want) == list(range(1, 8))
    for step in range(1, 8):  # the warmup-cosine LambdaLR recomputes the LR from its bases each step
        factor = 0.5 if step >= 3 else 1.0
        assert got[step] == pytest.approx([factor * lr for lr in want[step]], rel=1e-12), step


def test_d_schedule_once_per_optimizer_step(tmp_path):
    # No EMA in tormented: the once-per-update state is the LR schedule (and global_step).
    # accumulate_grad_batches splits each batch into micro-batches inside training_step.
    fault = kit.GradientFault(1, "nan")
    trainer, states, tried, i = _faulted_run(tmp_path, fault, max_steps=4, accumulate_grad_batches=2)
    assert len(tried) == 2 * 2  # the skipped attempt's two micro-batches, then the retry's
    final = states.after[max(states.after)]
    start = states.at_start["schedulers"][0]["last_epoch"]
    assert final["schedulers"][0]["last_epoch"] - start == 4
    assert final["global_step"] == 4 and len(states.after) == 4


@pytest.mark.slow  # several training processes (kill -9 / resume)
def test_e_kill_and_resume_mid_epoch_and_at_epoch_end(tmp_path):
    kit.check_kill_resume(
        ADAPTER, tmp_path, kill_at_steps=[3, STEPS_PER_EPOCH], total_steps=STEPS_PER_EPOCH + 2
    )


@pytest.mark.slow  # four fits, two of them traced by torch.compile: ~100 s on 2 shared cores
def test_f_checkpoints_do_not_depend_on_compile(tmp_path):
    kit.check_compile_independent(make_adapter(), tmp_path)


@pytest.mark.slow  # several training processes (kill -9 / resume)
def test_g_kill_during_checkpoint_write_and_finished_run(tmp_path):
    out = kit.check_atomic_last_checkpoint(ADAPTER, tmp_path, total_steps=4, kill_in_write=3)
    assert out["last_checkpoints"] == ["checkpoints/last.ckpt"]


@pytest.mark.slow  # three training processes under torchrun
def test_ddp_two_cpu_processes_match_one(tmp_path):
    out = kit.check_ddp_matches_single_process(ADAPTER, tmp_path, steps=3, atol=1e-4, options={"moe": False})
    assert out["rank0_files"] > 0
