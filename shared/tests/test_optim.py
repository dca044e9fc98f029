import pytest
import torch

from lm_shared.optim import param_groups_with_weight_decay


def test_only_matrices_outside_embeddings_decay():
    model = torch.nn.ModuleDict(
        {"embed": torch.nn.Embedding(10, 4), "proj": torch.nn.Linear(4, 4), "norm": torch.nn.LayerNorm(4)}
    )
    model["proj"].bias.requires_grad_(False)
    decay, rest = param_groups_with_weight_decay(model, 0.1)
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    assert [id(p) for p in decay["params"]] == [id(model["proj"].weight)]
    ids = {id(p) for p in rest["params"]}
    assert ids == {id(model["embed"].weight), id(model["norm"].weight), id(model["norm"].bias)}
    with pytest.raises(ValueError, match="weight_decay"):
        param_groups_with_weight_decay(model, -1.0)
