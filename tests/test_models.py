from __future__ import annotations

import pytest
import torch
import yaml

from lpntk.models import MODELS, build_model, count_parameters


@pytest.mark.parametrize(
    "name,shape,params",
    [
        ("mnist_cnn", (1, 28, 28), 1_199_882),  # paper-protocols 2.1 (Jacobian width 11,998,820 / 10)
        ("resnet18_nobn", (3, 32, 32), 11_164_362),  # paper-protocols 2.1
        ("small_cnn", (1, 8, 8), 38_282),
        ("mlp", (1, 8, 8), 64 * 256 + 256 + 256 * 10 + 10),
        ("mlp", (1, 28, 28), 784 * 256 + 256 + 256 * 10 + 10),  # 203,530: the 784-256-10 MLP
        # LeNet-5: conv 6@5x5 (156) + conv 16@5x5 (2,416) + fc 400-120 (48,120) + 120-84 (10,164) + 84-10 (850)
        ("lenet5", (1, 28, 28), 61_706),
        ("lenet5", (3, 32, 32), 3 * 150 + 6 + 2_416 + 576 * 120 + 120 + 10_164 + 850),
    ],
)
def test_parameter_counts_and_output_shape(name, shape, params):
    torch.manual_seed(0)
    model = build_model(name, shape, 10)
    assert count_parameters(model) == params
    assert model(torch.randn(3, *shape)).shape == (3, 10)


def test_paper_models_have_the_papers_structure():
    cnn = build_model("mnist_cnn", (1, 28, 28), 10)
    assert [type(m).__name__ for m in cnn.children()] == ["Conv2d", "Conv2d", "Dropout", "Dropout", "Linear", "Linear"]
    assert cnn.dropout1.p == 0.25 and cnn.dropout2.p == 0.5
    resnet = build_model("resnet18_nobn", (3, 32, 32), 10)
    kinds = {type(m).__name__ for m in resnet.modules()}
    assert not any("Norm" in k for k in kinds)  # every BatchNorm removed
    convs = [m for m in resnet.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.bias is None for c in convs) and resnet.linear.bias is not None


def test_reduced_width_and_errors():
    small = build_model("resnet18_nobn", (3, 8, 8), 4, width=1 / 16)
    assert small(torch.randn(2, 3, 8, 8)).shape == (2, 4)
    with pytest.raises(ValueError, match="unknown model 'lenet'"):
        build_model("lenet", (1, 28, 28), 10)
    with pytest.raises(ValueError, match="does not accept"):
        build_model("mlp", (1, 8, 8), 10, depth=3)


def test_schema_lists_exactly_the_registry(schema_path):
    schema = yaml.safe_load(schema_path.read_text())
    assert set(schema["$defs"]["model"]["properties"]["name"]["enum"]) == set(MODELS)
