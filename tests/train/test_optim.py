"""lpntk.optim against PyTorch's own optimiser and schedulers, the independent reference: the same numbers."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from lpntk.optim import SGD, EpochSchedule


def _model(dtype):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3)).to(dtype)


def _batches(dtype, n=6):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 5, generator=g, dtype=dtype), torch.randint(0, 3, (8,), generator=g)) for _ in range(n)]


def _train(model, opt, batches):
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "momentum,weight_decay,nesterov", [(0.0, 0.0, False), (0.9, 0.0, False), (0.9, 5e-4, False), (0.9, 5e-4, True)]
)
def test_sgd_equals_torch_optim_sgd_bit_for_bit(dtype, momentum, weight_decay, nesterov):
    ours, theirs, batches = _model(dtype), _model(dtype), _batches(dtype)
    _train(ours, SGD(ours.parameters(), 0.1, momentum, weight_decay, nesterov), batches)
    _train(theirs, torch.optim.SGD(theirs.parameters(), 0.1, momentum, weight_decay=weight_decay, nesterov=nesterov),
           batches)  # fmt: skip
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(ours[0].weight, _model(dtype)[0].weight)  # it did train


def test_sgd_state_round_trip_continues_the_same_run():
    batches = _batches(torch.float32)
    straight = _model(torch.float32)
    _train(straight, SGD(straight.parameters(), 0.05, 0.9, 5e-4, True), batches)
    first = _model(torch.float32)
    opt = SGD(first.parameters(), 0.05, 0.9, 5e-4, True)
    _train(first, opt, batches[:3])
    state, weights = opt.state_dict(), {k: v.clone() for k, v in first.state_dict().items()}
    second = _model(torch.float32)
    second.load_state_dict(weights)
    resumed = SGD(second.parameters(), 0.05, 0.9, 5e-4, True)
    resumed.load_state_dict(state)
    _train(second, resumed, batches[3:])
    for a, b in zip(straight.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="buffers"):
        SGD(torch.nn.Linear(2, 2).parameters(), 0.1, 0.9).load_state_dict({"lr": 0.1, "buffers": [None]})
    with pytest.raises(ValueError, match="Nesterov"):
        SGD(torch.nn.Linear(2, 2).parameters(), 0.1, 0.0, nesterov=True)


@pytest.mark.parametrize(
    "name,kwargs,reference",
    [
        ("none", {}, lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda _: 1.0)),
        ("step", {"step_size": 3, "gamma": 0.7}, lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.7)),
        ("cosine", {"t_max": 10}, lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10)),
        ("cosine", {"t_max": 4}, lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=4)),  # wraps around
    ],
)
def test_epoch_schedule_equals_pytorchs_schedulers(name, kwargs, reference):
    ours = SGD(torch.nn.Linear(2, 2).parameters(), 0.2)
    sched = EpochSchedule(ours, name, **kwargs)
    theirs = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), 0.2)
    ref = reference(theirs)
    got, want = [], []
    for _ in range(13):
        got.append(ours.lr)
        want.append(theirs.param_groups[0]["lr"])
        theirs.step()  # (no gradients: a no-op, but the order PyTorch expects)
        sched.step()
        ref.step()
    assert got == want  # the same float operations: equal, not close
    assert len(set(got)) > (1 if name != "none" else 0)
    restored = EpochSchedule(SGD(torch.nn.Linear(2, 2).parameters(), ours.lr), name, **kwargs)
    restored.load_state_dict(sched.state_dict())
    restored.step()
    sched.step()
    assert restored.optimizer.lr == ours.lr
    with pytest.raises(ValueError, match="schedule"):
        EpochSchedule(ours, "linear")


def test_a_training_job_does_not_import_torch_dynamo():
    """torch.optim's step imports torch._dynamo (about 3 s) in every process; lpntk's training must not."""
    code = (
        "import sys, torch\n"
        "from lpntk.data import Split\n"
        "from lpntk.lockstep import train_lockstep\n"
        "from lpntk.train import Recipe, seed_everything, train_model\n"
        "x = torch.randint(0, 256, (40, 1, 4, 4), dtype=torch.uint8); y = torch.arange(40) % 4\n"
        "split = Split(x, y, torch.arange(40))\n"
        "make = lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4))\n"
        "r = Recipe(epochs=2, batch_size=16, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule='cosine',"
        " select='last')\n"
        "seed_everything(1); train_model(make(), split, r, 1, mean=[0.5], std=[0.25], device='cpu')\n"
        "train_lockstep(make, split, r, [1, 2], mean=[0.5], std=[0.25], device='cpu')\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
