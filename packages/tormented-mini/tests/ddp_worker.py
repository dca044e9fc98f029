"""Runs one training from a JSON TrainConfig, then saves this rank's weights (for test_ddp.py).

Usage: ``python -m torch.distributed.run --nproc_per_node 2 ddp_worker.py CONFIG_JSON DUMP_DIR``
(or plain ``python ddp_worker.py ...`` for one process).
"""

import json
import os
import sys
from pathlib import Path

import torch

from tormented_mini.train import MLMTrainer, TrainConfig

if __name__ == "__main__":
    torch.set_num_threads(1)
    trainer = MLMTrainer(TrainConfig(**json.loads(sys.argv[1])), progress=False)
    trainer.run()
    rank = int(os.environ.get("RANK", "0"))
    torch.save(trainer.model.state_dict(), Path(sys.argv[2]) / f"rank{rank}.pt")
