"""infinito-iit's Lightning trainer against lm_shared's fault-injection kit (issue 15, points a-g + DDP).

The adapter runs :func:`infinito_iit.train.train` (what ``infinito train`` runs: the run-folder
policy, :class:`~infinito_iit.train.InfinitoModule`, the gradient-health callback, checkpoints,
early stopping, the plateau schedule) on a tiny model and a generated corpus whose training split
is 4 optimizer steps an epoch at a global batch of 4.
"""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path

import pytest

pytest.importorskip("lightning")

from lm_shared import testing as kit  # noqa: E402

ADAPTER = (__file__, "make_adapter")
BATCH = 4  # global batch (per-device batch x devices)
SEQ_LEN = 32
N_LINES = 34  # -> 18 training chunks of 32 tokens: 4 optimizer steps an epoch at batch 4


def _corpus(root: Path) -> Path:
    """A small generated corpus, written once per test directory (DDP ranks may ask together)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "corpus.txt"
    with open(root / ".corpus.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            words = ["la casa", "el perro", "los niños", "las flores", "un gato", "una mesa", "el río"]
            lines = [
                f"{words[i % 7]} es bonita y {words[(i * 5) % 7]} duerme en la plaza {i}."
                for i in range(N_LINES)
            ]
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@contextlib.contextmanager
def _eager_compile(enabled: bool):
    """``torch.compile`` with the eager backend: the wrapper (and its ``_orig_mod.`` keys) is the
    real one, without minutes of C++ kernel builds on a small CPU."""
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


class InfinitoAdapter:
    def fit(self, run_dir, *, max_steps, callbacks=(), resume=False, **options):
        from infinito_iit.model import InfinitoConfig
        from infinito_iit.train import TrainConfig, train

        run_dir = Path(run_dir)
        corpus = _corpus(run_dir.parent)
        scheduler = options.pop("scheduler", "plateau")
        if scheduler != "plateau":
            raise kit.Unsupported(
                f"infinito-iit's only LR schedule is ReduceLROnPlateau (no {scheduler!r} schedule)"
            )
        if options.pop("ema_decay", 0.0):
            raise kit.Unsupported(
                "infinito-iit keeps no EMA of the weights; its once-per-optimizer-step state is the "
                "IIT memory (test_backbone.py::test_d_memory_and_scheduler_advance_once_per_optimizer_step)"
            )
        devices = options.pop("devices", 1)
        # infinito writes checkpoints (last + best) at each validation: a checkpoint every step
        # is a validation every step.
        every = options.pop("checkpoint_every_n_steps", 0) or max_steps
        compile_model = options.pop("compile", False)
        # Dropout and the IIT noise draw per process: off for a DDP vs one-process comparison.
        stochastic = options.pop("stochastic", True)
        model = InfinitoConfig(
            vocab_size=300,
            max_seq_len=SEQ_LEN,
            hidden_size=32,
            num_layers=1,
            num_heads=2,
            memory_slots=8,
            memory_writes=2,
            segment_len=4,
            complexity_window=4,
            **({} if stochastic else {"dropout": 0.0, "noise_std": 0.0}),
        )
        tc = TrainConfig(
            data=str(corpus),
            vocab_size=300,
            seq_len=SEQ_LEN,
            batch_size=BATCH // devices,
            grad_accum=options.pop("accumulate_grad_batches", 1),
            max_steps=max_steps,
            eval_every=every,
            eval_batches=1,
            patience=1000,  # no early stop and no plateau cut in a few steps: runs compare exactly
            plateau_patience=1000,
            proxy_k=0,
            precision="32-true",
            compile=compile_model,
            devices=str(devices),
            strategy=options.pop("strategy", "auto"),
        )
        plugins = options.pop("plugins", [])
        assert not options, f"unknown options {options}"
        trainers = []

        import lightning as L

        class Keep(L.Callback):
            def on_fit_start(self, trainer, pl_module):
                trainers.append(trainer)

        with _eager_compile(compile_model):
            train(
                model,
                tc,
                run_dir,
                resume=resume,
                log=lambda msg: None,
                progress=False,
                callbacks=[*callbacks, Keep()],
                precision_plugins=plugins,
            )
        return trainers[-1]


def make_adapter():
    return InfinitoAdapter()


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_a_nonfinite_gradient_leaves_the_whole_state_unchanged(tmp_path, kind):
    kit.check_nonfinite_skip(make_adapter(), tmp_path, kind=kind)


def test_a_with_gradient_accumulation(tmp_path):
    kit.check_nonfinite_skip(make_adapter(), tmp_path, accumulate_grad_batches=2)


def test_b_overflowing_norm_under_fp16_is_skipped_and_training_goes_on(tmp_path):
    kit.check_overflow_skip(make_adapter(), tmp_path)


def test_c_lr_repair_lasts_under_the_plateau_schedule(tmp_path):
    # A checkpoint every step is a validation every step: the plateau schedule steps after the
    # repair (it never cuts the LR here: patience 1000) and must keep the halved LR.
    kit.check_lr_repair_persists(make_adapter(), tmp_path, scheduler="plateau", checkpoint_every_n_steps=1)


def test_d_memory_once_per_optimizer_step(tmp_path):
    # No EMA in infinito: its once-per-update state is the IIT memory (the deferred writes commit
    # once per applied optimizer step, pooled over micro-batches, dropped on a skip).
    out = kit.check_once_per_optimizer_step(
        make_adapter(), tmp_path, scheduler="plateau", step_counters=("memory.step",)
    )
    assert out["counters"] == {"model.memory.step": 4}


@pytest.mark.slow  # several training processes (kill -9 / resume, torchrun): 1.5-2 min
def test_e_kill_and_resume_mid_epoch_and_at_epoch_end(tmp_path):
    kit.check_kill_resume(ADAPTER, tmp_path, kill_at_steps=[3, 4], total_steps=6)


def test_f_checkpoints_do_not_depend_on_compile(tmp_path):
    kit.check_compile_independent(make_adapter(), tmp_path)


@pytest.mark.slow  # several training processes (kill -9 / resume, torchrun): 1.5-2 min
def test_g_kill_during_checkpoint_write_and_finished_run(tmp_path):
    out = kit.check_atomic_last_checkpoint(ADAPTER, tmp_path, total_steps=4, kill_in_write=4)
    assert out["last_checkpoints"] == ["checkpoints/last.ckpt"]


@pytest.mark.slow  # several training processes (kill -9 / resume, torchrun): 1.5-2 min
def test_ddp_two_cpu_processes_match_one(tmp_path):
    out = kit.check_ddp_matches_single_process(
        ADAPTER, tmp_path, steps=3, atol=1e-4, options={"stochastic": False}
    )
    assert out["rank0_files"] > 0


def test_fsdp_without_gpus_is_refused_before_any_work(tmp_path, monkeypatch):
    """Lightning's FSDP is GPU-only: on the CPU one user error, and no run folder is created."""
    import torch

    from infinito_iit.model import preset
    from infinito_iit.train import TrainConfig, train
    from lm_shared.errors import UserError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="--strategy fsdp needs CUDA GPUs"):
        train(preset("cpu"), TrainConfig(strategy="fsdp"), tmp_path / "run")
    assert not (tmp_path / "run").exists()
