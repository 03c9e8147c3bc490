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


def test_a_registration_carries_shapes_cost_key_and_label(repo, monkeypatch):
    """The registry against references outside it: the shapes bench_costs.py measures each model at (benchmarks/
    measure.py), lpntk.cost's key of its figures, and the MLP's label read off the layers it builds."""
    import sys

    from lpntk.cost import model_key
    from lpntk.models import model_label

    monkeypatch.syspath_prepend(str(repo / "benchmarks"))
    sys.modules.pop("measure", None)
    from measure import MODELS as MEASURED

    assert set(MODELS) == set(MEASURED)
    for name, spec in MODELS.items():
        assert [tuple(s) for s in MEASURED[name]["shapes"]] == list(spec.shapes), name
        assert spec.cost_key() == model_key(name, MEASURED[name]["shapes"][0]), name
        assert spec.cost_key((3, 32, 32)) == f"{name}@3x32x32"
    for shape, hidden in (((1, 28, 28), None), ((1, 8, 8), [32, 16]), ((3, 32, 32), [8])):
        args = {} if hidden is None else {"hidden": hidden}
        linears = [m for m in build_model("mlp", shape, 10, **args).modules() if isinstance(m, torch.nn.Linear)]
        widths = [linears[0].in_features, *(m.out_features for m in linears)]
        assert model_label("mlp", shape, 10, **args) == "MLP " + "-".join(map(str, widths))
    assert model_label("mlp", (1, 28, 28), 10) == "MLP 784-256-10"  # the README's name for it
    assert model_label("lenet5") == "LeNet-5" and MODELS["lenet5"].describe((3, 32, 32), 100) == "LeNet-5"


def test_register_model_adds_one_the_config_accepts(tmp_path, repo, schema_path):
    from lpntk import plugins, register_model
    from lpntk.config import dataset_config, load_config

    class Tiny(torch.nn.Module):
        def __init__(self, in_shape, num_classes):
            super().__init__()
            self.fc = torch.nn.Linear(int(torch.tensor(in_shape).prod()), num_classes)

        def forward(self, x):
            return self.fc(x.flatten(1))

    try:
        spec = register_model("tiny_linear", Tiny, shapes=[(1, 8, 8)], label="tiny linear")
        assert MODELS["tiny_linear"] is spec and spec.cost_key() == "tiny_linear@1x8x8"
        assert build_model("tiny_linear", (1, 8, 8), 10)(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
        raw = yaml.safe_load((repo / ".test" / "config" / "config.yaml").read_text())
        raw["datasets"]["tiny"]["model"] = {"name": "tiny_linear"}
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
        assert dataset_config(load_config(tmp_path / "c.yaml", schema_path), "tiny")["model"]["name"] == "tiny_linear"
        with pytest.raises(ValueError, match="shapes must list input shapes"):
            register_model("bad", Tiny, shapes=[(8, 8)], label="bad")

        @register_model("decorated", shapes=[(1, 8, 8)], label="decorated")
        class Decorated(Tiny):
            pass

        assert MODELS["decorated"].constructor is Decorated
    finally:
        for name in ("tiny_linear", "decorated", "bad"):
            MODELS.pop(name, None)
            if name in plugins._CHOICES[("model", "name")]:
                plugins._CHOICES[("model", "name")].remove(name)
