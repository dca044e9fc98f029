"""nanologic's Lightning trainer against lm_shared's fault-injection kit (issue 15, points a-g + DDP).

The adapter trains the ``tiny`` preset through :func:`nanologic.runner.train_run` (the code the
``train`` command runs) on 48 generated training examples: 6 optimizer steps an epoch at batch 8.
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest

pytest.importorskip("lightning")

from lm_shared import testing as kit  # noqa: E402

ADAPTER = (__file__, "make_adapter")
BATCH = 8
N_TRAIN = 48
STEPS_PER_EPOCH = N_TRAIN // BATCH


def _shared_data(root: Path) -> Path:
    """Data built once per test directory (a lock: DDP ranks may ask together)."""
    data = root / "nl-shared"
    data.mkdir(parents=True, exist_ok=True)
    with open(data / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (data / "ready").exists():
            from nanologic.configs import DatasetConfig
            from nanologic.data import read_jsonl, write_jsonl
            from nanologic.stages import build_dataset

            full = data / "full"
            build_dataset(full, DatasetConfig.for_training(300, None, 0))
            for split, n in (("train", N_TRAIN), ("val", 16), ("test", 4)):
                rows = read_jsonl(full / f"{split}.jsonl")
                rows = (rows * (n // max(1, len(rows)) + 1))[:n]
                write_jsonl(data / "data" / f"{split}.jsonl", rows)
            (data / "ready").write_text("1")
    return data


class NanologicAdapter:
    def fit(self, run_dir, *, max_steps, callbacks=(), resume=False, **options):
        from nanologic.runner import train_run
        from nanologic.training import TrainConfig

        run_dir = Path(run_dir)
        shared = _shared_data(run_dir.parent)
        scheduler = options.pop("scheduler", "schedulefree")
        if scheduler == "plateau":
            raise kit.Unsupported("nanologic has no ReduceLROnPlateau schedule")
        devices = options.pop("devices", 1)
        tc = TrainConfig(
            batch_size=BATCH // devices,
            lr=3e-3,
            warmup_steps=3,
            max_epochs=100,
            max_steps=max_steps,
            optimizer="schedulefree" if scheduler == "schedulefree" else "adamw",
            ema_decay=options.pop("ema_decay", 0.0),
            accumulate_grad_batches=options.pop("accumulate_grad_batches", 1),
            precision="32-true",
            compile=options.pop("compile", False),
            checkpoint_every_n_steps=options.pop("checkpoint_every_n_steps", 0),
            devices=devices,
            strategy=options.pop("strategy", "auto"),
        )
        plugins = options.pop("plugins", [])
        assert not options, f"unknown options {options}"
        trainers = []

        import lightning as L

        class Keep(L.Callback):
            def on_fit_start(self, trainer, pl_module):
                trainers.append(trainer)

        train_run(
            run_dir,
            preset="tiny",
            train_config=tc,
            data_dir=shared / "data",
            vocab_size=400,  # train_run trains the run's tokenizer on the shared data (rank 0 only)
            resume="last" if resume else None,
            eval_limit=1,
            threads=1,
            callbacks=[*callbacks, Keep()],
            precision_plugins=plugins,
        )
        return trainers[-1]


def make_adapter():
    return NanologicAdapter()


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_a_nonfinite_gradient_leaves_the_whole_state_unchanged(tmp_path, kind):
    # default optimizer: schedule-free AdamW, whose k/weight_sum/lr_max/scheduled_lr must not move
    kit.check_nonfinite_skip(make_adapter(), tmp_path, kind=kind, ema_decay=0.9)


def test_a_with_adamw_and_cosine(tmp_path):
    kit.check_nonfinite_skip(make_adapter(), tmp_path, scheduler="cosine")


def test_b_overflowing_norm_under_fp16_is_skipped_and_training_goes_on(tmp_path):
    kit.check_overflow_skip(make_adapter(), tmp_path)


@pytest.mark.parametrize("scheduler", ["cosine", "schedulefree"])
def test_c_lr_repair_lasts(tmp_path, scheduler):
    kit.check_lr_repair_persists(make_adapter(), tmp_path, scheduler=scheduler)


@pytest.mark.parametrize("scheduler", ["cosine", "schedulefree"])
def test_d_ema_and_schedule_once_per_optimizer_step(tmp_path, scheduler):
    out = kit.check_once_per_optimizer_step(make_adapter(), tmp_path, scheduler=scheduler)
    assert out["n_averaged"] == 4


@pytest.mark.slow  # several training processes (kill -9 / resume, torchrun)
def test_e_kill_and_resume_mid_epoch_and_at_epoch_end(tmp_path):
    kit.check_kill_resume(
        ADAPTER, tmp_path, kill_at_steps=[3, STEPS_PER_EPOCH], total_steps=STEPS_PER_EPOCH + 3
    )


def test_f_old_checkpoints_with_orig_mod_keys_still_load(tmp_path):
    import torch

    from nanologic.model import build_config
    from nanologic.training import NanoLogicModule, TrainConfig, train_config_dict

    module = NanoLogicModule(build_config("tiny", 100).to_dict(), train_config_dict(TrainConfig()))
    state = {k.replace("model.", "model._orig_mod.", 1): v for k, v in module.state_dict().items()}
    ckpt = {"state_dict": state}
    module.on_load_checkpoint(ckpt)
    other = NanoLogicModule(build_config("tiny", 100).to_dict(), train_config_dict(TrainConfig()))
    other.load_state_dict(ckpt["state_dict"])
    assert all(torch.equal(a, b) for a, b in zip(module.state_dict().values(), other.state_dict().values()))


@pytest.mark.slow  # several training processes (kill -9 / resume, torchrun)
def test_g_kill_during_checkpoint_write_and_finished_run(tmp_path):
    out = kit.check_atomic_last_checkpoint(ADAPTER, tmp_path, total_steps=4, kill_in_write=2)
    assert out["last_checkpoints"] == ["checkpoints/phase2/last.ckpt"]


@pytest.mark.slow  # several training processes (kill -9 / resume, torchrun)
def test_ddp_two_cpu_processes_match_one(tmp_path):
    out = kit.check_ddp_matches_single_process(ADAPTER, tmp_path, steps=3, atol=1e-4)
    assert out["rank0_files"] > 0
    report = json.loads((tmp_path / "ddp" / "eval" / "report.json").read_text())
    assert report["n_test"] == 1


def test_fsdp_without_gpus_is_refused_before_any_work(tmp_path, monkeypatch):
    """Lightning's FSDP is GPU-only: on the CPU one user error, and no run folder is created."""
    import torch

    from lm_shared.errors import UserError
    from nanologic.runner import train_run
    from nanologic.training import TrainConfig

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="--strategy fsdp needs CUDA GPUs"):
        train_run(tmp_path / "run", preset="tiny", train_config=TrainConfig(strategy="fsdp"))
    assert not (tmp_path / "run").exists()


def test_sampler_shards_the_global_batches():
    from nanologic.training import LengthBucketSampler

    lengths = [i % 17 for i in range(103)]
    one = LengthBucketSampler(lengths, 8, seed=3, curriculum_epochs=0)
    two = [LengthBucketSampler(lengths, 4, seed=3, num_replicas=2, rank=r) for r in range(2)]
    for s in (one, *two):
        s.set_epoch(2)
    a, b0, b1 = list(one), list(two[0]), list(two[1])
    assert len(a) == len(b0) == len(b1) == len(one) == len(two[0])
    assert [x + y for x, y in zip(b0, b1)] == a


def test_sampler_resumes_mid_epoch():
    from lm_shared.resumable import ResumableBatchSampler
    from nanologic.training import LengthBucketSampler

    lengths = list(range(80))
    full = ResumableBatchSampler(LengthBucketSampler(lengths, 8, seed=0, curriculum_epochs=1))
    full.set_epoch(1)
    batches = list(full)
    resumed = ResumableBatchSampler(LengthBucketSampler(lengths, 8, seed=0, curriculum_epochs=1))
    resumed.resume_at(1, 3)
    resumed.set_epoch(1)
    assert list(resumed) == batches[3:]
    resumed.set_epoch(2)  # the skip applies once
    assert len(list(resumed)) == len(batches)
