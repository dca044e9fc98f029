"""TensorBoard logging without importing TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorboardX")
pytest.importorskip("lightning")


def test_lightning_logger_writes_events_without_importing_tensorflow(tmp_path: Path) -> None:
    code = f"""
import sys
from lm_shared.summary import summary_writer, tensorboard_logger
logger = tensorboard_logger({str(tmp_path)!r}, name="phase")
logger.log_hyperparams({{"lr": 0.1}})
logger.log_metrics({{"train_loss": 1.5}}, step=3)
logger.save()
logger.finalize("success")
writer = summary_writer({str(tmp_path / "plain")!r})
writer.add_scalar("loss", 2.0, 1)
writer.close()
print("tensorflow" in sys.modules, "torch.utils.tensorboard" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    events = list(tmp_path.glob("phase/version_0/events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    assert (tmp_path / "phase" / "version_0" / "hparams.yaml").read_text().strip() == "lr: 0.1"
    assert list((tmp_path / "plain").glob("events.out.tfevents.*"))
