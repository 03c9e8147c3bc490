"""Independent references (issue 13): every expected value here is built without calling the function under test.

* s(y) and the lpNTK: s(y) by hand (+1 at the label, -1 elsewhere); kappa of a linear model in closed form with
  plain arithmetic; kappa of a small float64 MLP / CNN from a ``torch.func.jacrev`` Jacobian contracted with
  hand-built s(y).
* The recorded dynamics of :func:`lpntk.train_model` (loss, correctness, L2 error, learning rates, forgetting)
  against a hand-written training loop with the same seed, the documented shuffling generator and
  ``torch.optim.SGD`` with a closed-form cosine schedule.
* :func:`lpntk.data.augment_batch`: the crop offsets and flips replicated from the seeded generator, the expected
  images built element by element.
* :func:`lpntk.kernel.exact_matmul`: both TF32 flags off inside, restored after (also on an exception).
* Learning difficulty: curve areas of literal curves, and LD / target curves against the hand-written loop.

Each of these was checked by planting the bug it guards against (docs/mutation-testing.md lists the plants).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import lpntk
from lpntk.data import Split, augment_batch
from lpntk.difficulty import curve_area, learning_difficulty, target_l2_curves
from lpntk.kernel import exact_matmul, sign_vectors
from lpntk.models import build_model
from lpntk.train import Recipe, make_scheduler, presentation_forgetting, seed_everything, train_model

# ---------------------------------------------------------------------------------------------------- s(y), lpNTK


def _s_by_hand(label: int, k: int) -> list[float]:
    return [1.0 if c == label else -1.0 for c in range(k)]


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_sign_vectors_are_plus_one_at_the_label_and_minus_one_elsewhere(k):
    y = torch.tensor([0, k - 1, 1 % k, (k // 2)])
    expected = 2 * torch.nn.functional.one_hot(y, k).double() - 1
    got = sign_vectors(y, k)
    assert got.shape == (4, k)
    np.testing.assert_array_equal(got.double().numpy(), expected.numpy())
    np.testing.assert_array_equal(got.double().numpy(), np.array([_s_by_hand(int(c), k) for c in y]))
    # the top-level re-export is the same function
    np.testing.assert_array_equal(lpntk.sign_vectors(y, k).double().numpy(), expected.numpy())


def _linear_lpntk_by_hand(x1, y1, x2, y2, k):
    """kappa = (1/K) s(y)^T J(x) J(x')^T s(y') for z = W x + b: J(x) J(x')^T = (x . x' + 1) I_K, so
    kappa = (1/K) (x . x' + 1) s(y) . s(y'); written with Python floats only."""
    out = np.zeros((len(x1), len(x2)))
    for i, (xi, yi) in enumerate(zip(x1.tolist(), y1.tolist(), strict=True)):
        for j, (xj, yj) in enumerate(zip(x2.tolist(), y2.tolist(), strict=True)):
            dot = sum(a * b for a, b in zip(xi, xj, strict=True)) + 1.0
            ss = sum(a * b for a, b in zip(_s_by_hand(yi, k), _s_by_hand(yj, k), strict=True))
            out[i, j] = dot * ss / k
    return out


@pytest.mark.parametrize("k", [3, 4, 7])
def test_lpntk_of_a_linear_model_equals_the_closed_form(k):
    g = torch.Generator().manual_seed(k)
    d = 5
    model = nn.Linear(d, k).double()
    x = torch.randn(6, d, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, k - 1, 1])
    x2 = torch.randn(4, d, generator=g, dtype=torch.float64)
    y2 = torch.tensor([2, 0, k - 1, 1])
    gram = lpntk.lpntk_gram(model, x, y).numpy()
    np.testing.assert_allclose(gram, _linear_lpntk_by_hand(x, y, x, y, k), rtol=1e-12, atol=1e-12)
    cross = lpntk.lpntk_gram(model, x, y, x2=x2, y2=y2).numpy()
    np.testing.assert_allclose(cross, _linear_lpntk_by_hand(x, y, x2, y2, k), rtol=1e-12, atol=1e-12)
    # same label: s . s' = K -> kappa = x . x' + 1; different labels: s . s' = K - 4
    assert gram[0, 3] == pytest.approx(float(x[0] @ x[3]) + 1.0, rel=1e-12)
    assert gram[0, 1] == pytest.approx((float(x[0] @ x[1]) + 1.0) * (k - 4) / k, rel=1e-12, abs=1e-12)
    # the pNTK of the same model: (1/K) 1^T J J'^T 1 = x . x' + 1
    np.testing.assert_allclose(lpntk.pntk_gram(model, x).numpy(), (x @ x.T + 1).numpy(), rtol=1e-12, atol=1e-12)


class _SmallCNN(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 4 * 4, k)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


def _jacobian_rows(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """J(x_n) for every sample, (N, K, P), from torch.func.jacrev over all trainable parameters."""
    from torch.func import functional_call, jacrev, vmap

    params = {n: p.detach() for n, p in model.named_parameters()}

    def logits(p, xi):
        return functional_call(model, p, (xi[None],))[0]

    jac = vmap(jacrev(logits), in_dims=(None, 0))(params, x)
    n, k = len(x), model(x[:1]).shape[1]
    return torch.cat([jac[name].reshape(n, k, -1) for name in params], dim=2)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_lpntk_equals_a_jacrev_reference_with_hand_built_signs(arch):
    torch.manual_seed(0)
    k = 4
    if arch == "mlp":
        model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, k)).double()
        x = torch.randn(7, 5, dtype=torch.float64)
    else:
        model = _SmallCNN(k).double()
        x = torch.randn(7, 2, 4, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0, 2, 1])
    s = torch.tensor([_s_by_hand(int(c), k) for c in y], dtype=torch.float64)  # (N, K), never sign_vectors
    jac = _jacobian_rows(model, x)
    phi = torch.einsum("nkp,nk->np", jac, s) / math.sqrt(k)
    ref = (phi @ phi.T).numpy()
    np.testing.assert_allclose(lpntk.lpntk_gram(model, x, y).numpy(), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        lpntk.lpntk_gram(model, x[:3], y[:3], x2=x[3:], y2=y[3:]).numpy(), ref[:3, 3:], rtol=1e-10, atol=1e-12
    )
    # the same reference written entry by entry: (1/K) s_i^T J_i J_j^T s_j
    i, j = 1, 5
    entry = float(s[i] @ jac[i] @ jac[j].T @ s[j]) / k
    assert ref[i, j] == pytest.approx(entry, rel=1e-12)


# ---------------------------------------------------------------------------------------------------- training

_SMALL = {"width": 0.5, "hidden": 8}


def _hand_training(split: Split, mean, std, *, seed, epochs, batch_size, lr, momentum, weight_decay, t_max):
    """A plain re-implementation of the training loop the train module documents: seeded initialisation, the
    per-epoch permutation from torch.Generator().manual_seed(seed), SGD (momentum, coupled weight decay), the cosine
    schedule eta_e = eta_0 (1 + cos(pi e / T)) / 2 in closed form, and per presentation (train mode, before the
    update): cross-entropy, correctness, ||softmax(z) - e_y||. Returns the records, the orders, the per-step
    learning rates, the model, and the eval-mode L2 errors after every epoch."""
    seed_everything(seed)
    model = build_model("small_cnn", (1, 8, 8), 10, **_SMALL)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    x = (split.x.float() - float(mean[0])) / float(std[0])
    y = split.y
    n = len(y)
    rec = {name: np.zeros((n, epochs)) for name in ("loss", "correct", "l2")}
    orders, lrs, eval_l2 = [], [], []
    for e in range(epochs):
        for group in opt.param_groups:
            group["lr"] = lr * (1 + math.cos(math.pi * e / t_max)) / 2
        model.train()
        order = torch.randperm(n, generator=gen)
        orders.append(order.numpy())
        for b in range(0, n, batch_size):
            idx = order[b : b + batch_size]
            z = model(x[idx])
            logp = torch.log_softmax(z, dim=1)
            loss_vec = -logp[torch.arange(len(idx)), y[idx]]
            opt.zero_grad()
            loss_vec.mean().backward()
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            with torch.no_grad():
                p = torch.softmax(z, dim=1)
                onehot = torch.zeros_like(p)
                onehot[torch.arange(len(idx)), y[idx]] = 1.0
                for m, i in enumerate(idx.tolist()):
                    rec["loss"][i, e] = float(loss_vec[m])
                    rec["correct"][i, e] = float(int(z[m].argmax()) == int(y[i]))
                    rec["l2"][i, e] = math.sqrt(float(((p[m] - onehot[m]) ** 2).sum()))
        model.eval()
        with torch.no_grad():
            p = torch.softmax(model(x), dim=1)
        eval_l2.append([math.sqrt(sum((p[i, c].item() - (c == int(y[i]))) ** 2 for c in range(10))) for i in range(n)])
    rec["correct"] = rec["correct"].astype(bool)
    return rec, np.stack(orders), np.asarray(lrs), model, np.asarray(eval_l2).T


_HAND = dict(epochs=3, batch_size=32, lr=0.1, momentum=0.9, weight_decay=5e-4)


@pytest.fixture(scope="module")
def hand_run(digits):
    split = digits.train.subset(range(96))
    mean, std = digits.info.mean, digits.info.std
    return split, mean, std, _hand_training(split, mean, std, seed=3, t_max=3, **_HAND)


def test_train_model_records_what_a_hand_written_loop_computes(hand_run):
    split, mean, std, (rec, orders, lrs, model, _) = hand_run
    recipe = Recipe(**_HAND, schedule="cosine", select="last")
    seed_everything(3)
    res = train_model(
        build_model("small_cnn", (1, 8, 8), 10, **_SMALL), split, recipe, 3, mean=mean, std=std, device="cpu"
    )
    d = res.dynamics
    np.testing.assert_array_equal(d["batch_order"], orders)
    np.testing.assert_allclose(d["lr"], lrs, rtol=1e-12)
    np.testing.assert_allclose(d["loss"], rec["loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d["l2"], rec["l2"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(d["correct"], rec["correct"])
    assert 0 < rec["correct"].sum() < rec["correct"].size  # both outcomes occur, so an inversion shows
    # training accuracy and loss of the history are the epoch means of the presentations
    for e, row in enumerate(res.history):
        assert row["train_acc"] == pytest.approx(rec["correct"][:, e].mean(), abs=1e-7)
        assert row["train_loss"] == pytest.approx(rec["loss"][:, e].mean(), rel=1e-5)
    # forgetting events counted by hand from the hand-made correctness: correct at e - 1, wrong at e
    c = rec["correct"]
    events = [[e > 0 and c[i, e - 1] and not c[i, e] for e in range(c.shape[1])] for i in range(len(c))]
    np.testing.assert_array_equal(d["forgetting_events"], events)
    np.testing.assert_array_equal(d["forgetting_count"], [sum(r) for r in events])
    np.testing.assert_array_equal(d["never_learned"], [not any(r) for r in c])
    # the final weights follow the same trajectory
    for name, v in model.state_dict().items():
        np.testing.assert_allclose(res.last_state[name].numpy(), v.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("lockstep", [False, True])
def test_learning_difficulty_and_target_curves_against_the_hand_written_loop(hand_run, lockstep):
    split, mean, std, (rec, _, _, _, eval_l2) = hand_run
    recipe = Recipe(**_HAND, schedule="cosine", select="last")

    def make():
        return build_model("small_cnn", (1, 8, 8), 10, **_SMALL)

    ld = learning_difficulty(make, [split] if lockstep else split, recipe, 3, mean=mean, std=std)
    np.testing.assert_allclose(ld[0] if lockstep else ld, rec["l2"].sum(axis=1), rtol=1e-5, atol=1e-5)
    targets = np.array([0, 17, 95])
    curves = target_l2_curves(make, split, targets, recipe, [3], mean=mean, std=std, lockstep=lockstep)
    np.testing.assert_allclose(curves["train"][0], rec["l2"][targets], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(curves["eval"][0], eval_l2[targets], rtol=1e-4, atol=1e-5)


def test_curve_area_of_literal_curves():
    # unit epoch width: the area is the plain sum over the last axis
    curves = np.array([[0.5, 0.25, 0.125], [1.0, 0.0, 0.5]])
    np.testing.assert_allclose(curve_area(curves), [0.875, 1.5], rtol=0, atol=1e-15)
    np.testing.assert_allclose(curve_area(np.array([[[0.1, 0.2], [0.3, 0.4]]])), [[0.3, 0.7]], atol=1e-15)
    # the L2 errors of hand-computed logits: softmax (1/2, 1/2) -> sqrt(1/2); (3/4, 1/4), label 0 -> sqrt(2)/4
    area = curve_area(np.array([math.sqrt(0.5), math.sqrt(2) / 4, 0.0]))
    assert float(area) == pytest.approx(0.75 * math.sqrt(2), rel=1e-12)


def test_cosine_schedule_follows_the_closed_form():
    eta0 = 0.2
    for epochs, t_max in ((6, None), (6, 4), (5, 10)):
        model = nn.Linear(2, 2)
        recipe = Recipe(epochs=epochs, lr=eta0, schedule="cosine", t_max=t_max)
        opt = torch.optim.SGD(model.parameters(), lr=eta0)
        sched = make_scheduler(opt, recipe)
        period = t_max or epochs
        for e in range(epochs):
            assert opt.param_groups[0]["lr"] == pytest.approx(
                eta0 * (1 + math.cos(math.pi * e / period)) / 2, abs=1e-12
            )
            opt.step()
            sched.step()
    # a literal point: half-way through the period the rate is eta0 / 2, at the end 0
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0)
    sched = make_scheduler(opt, Recipe(epochs=4, lr=1.0, schedule="cosine"))
    seen = []
    for _ in range(4):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(seen, [1.0, (1 + math.sqrt(0.5)) / 2, 0.5, (1 - math.sqrt(0.5)) / 2], atol=1e-12)
    np.testing.assert_allclose(opt.param_groups[0]["lr"], 0.0, atol=1e-12)


def test_forgetting_from_a_hand_made_correctness_matrix():
    from lpntk.scores import forgetting_scores, score_table

    # rows: learned-forgotten-relearned-forgotten, always right, never right, right-wrong-wrong-right-wrong
    seed_a = np.array([[0, 1, 0, 1, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [1, 0, 0, 1, 0]], dtype=bool)
    seed_b = np.array([[1, 1, 1, 1, 1], [1, 0, 1, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], dtype=bool)
    fa, fb = presentation_forgetting(seed_a), presentation_forgetting(seed_b)
    assert fa["count"].tolist() == [2, 0, 0, 2] and fb["count"].tolist() == [0, 2, 0, 0]
    assert fa["first_learned"].tolist() == [1, 0, -1, 0] and fb["first_learned"].tolist() == [0, 0, 4, -1]
    assert fa["never_learned"].tolist() == [False, False, True, False]
    assert fa["events"].tolist()[0] == [False, False, True, False, True]
    # 0/1 integers are read as booleans: the same events, as a boolean array
    fi = presentation_forgetting(seed_a.astype(np.int64))
    assert fi["events"].dtype == bool and fi["events"].tolist() == fa["events"].tolist()
    assert fi["never_learned"].dtype == bool and fi["count"].tolist() == [2, 0, 0, 2]
    # score: events per seed, E = 5 for a never-learned sample; the mean over the two seeds
    scores = forgetting_scores(
        np.stack([fa["count"], fb["count"]]), np.stack([fa["never_learned"], fb["never_learned"]]), 5
    )
    np.testing.assert_allclose(scores, [(2 + 0) / 2, (0 + 2) / 2, (5 + 0) / 2, (2 + 5) / 2])

    def dyn(correct, f):
        return {
            "index": np.arange(10, 14),
            "y": np.array([0, 1, 0, 1]),
            "correct": correct,
            "forgetting_count": f["count"],
            "never_learned": f["never_learned"],
            "score_epochs": np.array([1]),
            "el2n": np.array([[0.1], [0.2], [0.3], [0.4]]),
            "grand": np.array([[1.0], [2.0], [3.0], [4.0]]),
        }

    table = score_table([dyn(seed_a, fa), dyn(seed_b, fb)], el2n_epoch=1, grand_epoch=1, random_seed=0)
    np.testing.assert_allclose(table["forgetting"], [1.0, 1.0, 2.5, 3.5])
    np.testing.assert_allclose(table["forgetting_std"], [1.0, 1.0, 2.5, 1.5])
    np.testing.assert_allclose(table["never_learned"], [0.0, 0.0, 0.5, 0.5])


# ---------------------------------------------------------------------------------------------------- augmentation


def _images(n, c=2, h=3, w=4):
    return torch.arange(n * c * h * w, dtype=torch.float32).view(n, c, h, w) + 1  # no row is its own mirror


def test_horizontal_flip_follows_the_seeded_draw():
    x = _images(12)
    for seed in (0, 1, 5):
        draw = torch.rand(12, generator=torch.Generator().manual_seed(seed)) < 0.5
        assert 0 < int(draw.sum()) < 12  # both outcomes under these seeds
        out = augment_batch(x, 0, True, torch.Generator().manual_seed(seed))
        for i in range(12):
            expected = [[row[::-1] for row in chan] for chan in x[i].tolist()] if draw[i] else x[i].tolist()
            assert out[i].tolist() == expected, (seed, i)
    # without flipping or cropping the batch is unchanged
    assert torch.equal(augment_batch(x, 0, False, torch.Generator().manual_seed(0)), x)


def test_crop_offsets_and_flips_follow_the_seeded_draws():
    n, p = 10, 2
    x = _images(n)
    _, c, h, w = x.shape
    seed = 3
    g = torch.Generator().manual_seed(seed)  # draw order: row offsets, column offsets, then flips
    dy = torch.randint(0, 2 * p + 1, (n,), generator=g).tolist()
    dx = torch.randint(0, 2 * p + 1, (n,), generator=g).tolist()
    flip = (torch.rand(n, generator=g) < 0.5).tolist()
    assert len(set(zip(dy, dx, strict=True))) > 3 and any(flip) and not all(flip)
    out = augment_batch(x, p, True, torch.Generator().manual_seed(seed))
    assert out.shape == x.shape
    xs = x.tolist()
    for i in range(n):
        for ch in range(c):
            for r in range(h):
                for q in range(w):
                    qq = w - 1 - q if flip[i] else q  # the flip acts on the cropped window
                    rr, cc = r + dy[i] - p, qq + dx[i] - p  # position in the unpadded image
                    expected = xs[i][ch][rr][cc] if 0 <= rr < h and 0 <= cc < w else 0.0
                    assert out[i, ch, r, q].item() == expected, (i, ch, r, q)


# ---------------------------------------------------------------------------------------------------- exact_matmul


def test_exact_matmul_switches_both_tf32_flags_off_and_restores_them():
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (matmul.allow_tf32, cudnn.allow_tf32)
    try:
        for before in ((True, True), (True, False), (False, True)):
            matmul.allow_tf32, cudnn.allow_tf32 = before
            with exact_matmul():
                assert (matmul.allow_tf32, cudnn.allow_tf32) == (False, False)
            assert (matmul.allow_tf32, cudnn.allow_tf32) == before
        matmul.allow_tf32, cudnn.allow_tf32 = True, True
        with pytest.raises(RuntimeError, match="inside"):
            with exact_matmul():
                assert (matmul.allow_tf32, cudnn.allow_tf32) == (False, False)
                raise RuntimeError("inside")
        assert (matmul.allow_tf32, cudnn.allow_tf32) == (True, True)
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


# ---------------------------------------------------------------------------------------------------- forgetting run

_FSETUP = dict(batch_size=16, lr=0.05, momentum=0.9, weight_decay=5e-4, start_step=3, steps=3)
_AUG = {"crop_padding": 1, "horizontal_flip": True}


def _dropout_mlp():
    torch.manual_seed(0)
    return build_model("mlp", (1, 8, 8), 10, hidden=(16,), dropout=0.5)


def _hand_forgetting_trajectory(model, split, mean, std, seed, *, augment=True, dropout=True, steps=5):
    """The training steps paper.yaml's forgetting run takes, written out: per-epoch permutations from
    torch.Generator().manual_seed(seed), augmented inputs (crop + flip, the augmentation generator seeded with
    seed + 7919 as in train_model), dropout active, SGD with momentum and weight decay at a constant rate.
    Returns the train-mode loss and the parameters before every step."""
    n, bs = len(split), _FSETUP["batch_size"]
    per_epoch = math.ceil(n / bs)
    shuffle, aug = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 7919)
    opt = torch.optim.SGD(
        model.parameters(), lr=_FSETUP["lr"], momentum=_FSETUP["momentum"], weight_decay=_FSETUP["weight_decay"]
    )
    x = split.x.float()
    losses, before = [], []
    for t in range(1, steps + 1):
        b = (t - 1) % per_epoch
        if b == 0:
            order = torch.randperm(n, generator=shuffle)
        pos = order[b * bs : (b + 1) * bs]
        xb = augment_batch(x[pos], _AUG["crop_padding"], _AUG["horizontal_flip"], aug) if augment else x[pos]
        xb = (xb - float(mean[0])) / float(std[0])
        before.append({k: v.detach().clone() for k, v in model.named_parameters()})
        model.train(dropout)
        loss = torch.nn.functional.cross_entropy(model(xb), split.y[pos])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses, before, order


def test_forgetting_run_with_dropout_and_augmentation_follows_the_hand_written_steps(digits):
    from torch.func import functional_call, jvp

    from lpntk.forgetting import PREDICTORS, ForgettingSetup, run_forgetting

    split = digits.train.subset(range(40))  # 3 steps per epoch: the window crosses an epoch boundary
    mean, std = digits.info.mean, digits.info.std
    setup = ForgettingSetup(dropout=True, augment=True, **_FSETUP)
    assert "entk_update" in setup.predictors and set(setup.predictors) == set(PREDICTORS)

    def run():
        model = _dropout_mlp()
        torch.manual_seed(123)  # dropout draws from the global generator
        res = run_forgetting(model, split, setup, 5, mean=mean, std=std, augment_cfg=_AUG, device="cpu")
        return res, model

    res, model = run()
    again, model2 = run()
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in rows]  # noqa: E731
    assert strip(res.steps) == strip(again.steps)
    for (name, p), p2 in zip(model.named_parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, p2), name

    ref = _dropout_mlp()
    torch.manual_seed(123)
    losses, before, _ = _hand_forgetting_trajectory(ref, split, mean, std, 5)
    for (name, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-5, atol=1e-7, err_msg=name)
    assert [r["step"] for r in res.steps] == [3, 4, 5]
    np.testing.assert_allclose([r["loss"] for r in res.steps], losses[2:], rtol=1e-5)  # the dropout, augmented loss
    # the same steps without augmentation, or without dropout, end elsewhere: the run used both
    for kw in ({"augment": False}, {"dropout": False}):
        other = _dropout_mlp()
        torch.manual_seed(123)
        _hand_forgetting_trajectory(other, split, mean, std, 5, **kw)
        assert not torch.allclose(next(other.parameters()), next(ref.parameters()), rtol=1e-4, atol=1e-6), kw

    # entk_update of the last step: J(x_o) (w_5 - w_4) at w_4, eval mode, on the clean inputs of B_4
    for key in ("tp_entk_update", "fp_entk_update", "fn_entk_update", "sq_err_entk_update"):
        assert key in res.steps[-1]
    obs = torch.as_tensor(res.batches[3])
    obs = obs[obs >= 0]
    x_o = (split.x[obs].float() - float(mean[0])) / float(std[0])
    y_o = split.y[obs]
    w4 = before[4]
    w5 = {k: v.detach() for k, v in ref.named_parameters()}
    ref.eval()
    z, dz = jvp(lambda p: functional_call(ref, p, (x_o,)), (w4,), ({k: w5[k] - w4[k] for k in w4},))
    after = z + dz
    other = after.clone()
    other[torch.arange(len(y_o)), y_o] = -float("inf")
    margin = after[torch.arange(len(y_o)), y_o] - other.max(dim=1).values
    last = res.samples["step"] == 5
    np.testing.assert_array_equal(res.samples["position"][last], obs.numpy())
    np.testing.assert_allclose(
        res.samples["margin_pred_entk_update"][last], margin.detach().numpy(), rtol=1e-4, atol=1e-5
    )
