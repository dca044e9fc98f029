"""Swap a TinyLlama's MLP projections for SeedΔ layers, and encode a model's FFN tensors in memory."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy as np

from seeddelta.delta import DeltaConfig, SeedDeltaTensor, encode, refit_values
from seeddelta.errors import SeedDeltaError
from seeddelta.gguf_io import HF_MLP
from seeddelta.linear import SeedDeltaLinear
from seeddelta.model import TinyLlama

KINDS = ("ffn_gate", "ffn_up", "ffn_down")


def ffn_weight(model: TinyLlama, layer: int, kind: str) -> np.ndarray:
    module = getattr(model.model.layers[layer].mlp, HF_MLP[kind])
    return module.weight.detach().double().numpy()


def encode_model(
    model: TinyLlama,
    configs: dict[str, DeltaConfig],
    layers: Iterable[int],
    *,
    imatrix: dict[str, np.ndarray] | None = None,
    activations: dict[str, np.ndarray] | None = None,
    refit: bool = False,
    seed: int = 1234,
) -> dict[str, SeedDeltaTensor]:
    """``blk.N.kind`` -> encoding for each kind in ``configs`` and each layer (refit on activations)."""
    rng = np.random.default_rng(seed)
    out: dict[str, SeedDeltaTensor] = {}
    for layer in layers:
        for kind, cfg in configs.items():
            name = f"blk.{layer}.{kind}"
            W = ffn_weight(model, layer, kind)
            imat = imatrix.get(name) if imatrix else None
            enc = encode(W, cfg, imatrix=imat, rng=rng, name=name)
            if refit:
                if activations is None:
                    raise SeedDeltaError(f"{name}: refit needs calibration activations")
                enc = refit_values(enc, W, activations[name])
            out[name] = enc
    return out


def apply_seeddelta(model: TinyLlama, encodings: dict[str, SeedDeltaTensor]) -> TinyLlama:
    """A copy of ``model`` whose listed FFN projections are SeedDeltaLinear layers."""
    new = copy.deepcopy(model)
    for name, enc in encodings.items():
        _, layer, kind = name.split(".")
        setattr(new.model.layers[int(layer)].mlp, HF_MLP[kind], SeedDeltaLinear(enc))
    new.eval()
    return new
