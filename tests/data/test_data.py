from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from lpntk.data import DataNotFoundError, Split, load_prepared, normalize, prepare_dataset, save_prepared, to_unit


def test_digits_splits_are_disjoint_stratified_and_keep_original_indices(digits):
    from sklearn.datasets import load_digits

    src = load_digits()
    idx = {s: getattr(digits, s).index.numpy() for s in ("train", "val", "test")}
    allidx = np.concatenate(list(idx.values()))
    assert len(allidx) == len(np.unique(allidx)) == len(src.target)  # a partition of the source
    for s in ("train", "val", "test"):
        split = getattr(digits, s)
        # original indices point back at the source images and labels
        np.testing.assert_array_equal(split.y.numpy(), src.target[idx[s]])
        np.testing.assert_allclose(split.x[:, 0].numpy(), src.images[idx[s]] / 16.0, atol=1e-7)
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1293, 144, 360)
    fracs = np.bincount(digits.val.y.numpy(), minlength=10) / len(digits.val)
    np.testing.assert_allclose(fracs, np.bincount(src.target) / len(src.target), atol=0.02)
    assert digits.info.num_classes == 10 and digits.info.input_shape == (1, 8, 8)


def test_splits_are_seeded():
    spec = {"source": "sklearn", "name": "digits", "split_seed": 3}
    a, b = prepare_dataset("d", spec), prepare_dataset("d", spec)
    assert torch.equal(a.val.index, b.val.index)
    c = prepare_dataset("d", {**spec, "split_seed": 4})
    assert not torch.equal(a.val.index, c.val.index)


def test_per_class_limit_and_auto_normalisation(digits):
    p = prepare_dataset("d", {"source": "sklearn", "name": "digits", "per_class_limit": 20, "val_fraction": 0.25})
    counts = np.bincount(torch.cat([p.train.y, p.val.y]).numpy())
    assert (counts == 20).all()
    x = normalize(to_unit(digits.train.x), digits.info.mean, digits.info.std)
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-3


def test_save_load_roundtrip_records_sizes_and_checksums(digits, tmp_path):
    meta = save_prepared(digits, tmp_path)
    assert meta["class_sizes"]["train"] == np.bincount(digits.train.y.numpy()).tolist()
    assert len(meta["sha256"]["train"]) == 64
    back = load_prepared(tmp_path)
    for s in ("train", "val", "test"):
        assert torch.equal(getattr(back, s).x, getattr(digits, s).x)
        assert torch.equal(getattr(back, s).index, getattr(digits, s).index)
    assert back.info.mean == digits.info.mean


def test_missing_torchvision_data_names_dataset_dir_and_files(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DataNotFoundError) as err:
        prep = prepare_dataset("mnist", {"source": "torchvision", "name": "MNIST", "root": str(tmp_path / "nowhere")})
        save_prepared(prep, out)
    msg = str(err.value)
    assert "'MNIST'" in msg and str(tmp_path / "nowhere") in msg
    assert "train-images-idx3-ubyte" in msg and "download: true" in msg
    assert not out.exists()  # nothing written


def _fake_mnist(root, n_train=20, n_test=10, seed=0):
    """MNIST's four raw IDX files (magic 0 0 8 ndim, big-endian dimensions, uint8 data) with random pixels."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)  # every class at least twice
        header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28))
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + labels.tobytes())
    return raw


def test_truncated_mnist_file_is_named_with_its_sizes(tmp_path):
    from lpntk.data import DataCorruptError

    raw = _fake_mnist(tmp_path)
    spec = {"source": "torchvision", "name": "MNIST", "root": str(tmp_path), "val_fraction": 0.5}
    p = prepare_dataset("mnist", spec)
    assert len(p.train) + len(p.val) == 20 and len(p.test) == 10 and p.train.x.shape[1:] == (1, 28, 28)
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])  # an interrupted copy
    with pytest.raises(DataCorruptError) as err:
        prepare_dataset("mnist", spec)
    msg = str(err.value)
    assert str(images) in msg and "truncated: 5,000 bytes read, 15,696 expected" in msg  # 16 + 20 * 784
    assert "copy it again" in msg and "not found" not in msg
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"PK\x03\x04 a zip file")
    images.unlink()
    with pytest.raises(DataCorruptError, match="t10k-labels-idx1-ubyte is not an IDX file"):
        prepare_dataset("mnist", spec)


def test_unknown_sources_and_names_are_clear_errors():
    with pytest.raises(ValueError, match="unknown torchvision dataset 'Mnistt'"):
        prepare_dataset("x", {"source": "torchvision", "name": "Mnistt"})
    with pytest.raises(ValueError, match="unknown scikit-learn dataset"):
        prepare_dataset("x", {"source": "sklearn", "name": "iris"})
    with pytest.raises(ValueError, match="unknown dataset source"):
        prepare_dataset("x", {"source": "kaggle", "name": "x"})


def _fake_cifar10(root, n_per_batch=20, seed=0):
    """CIFAR-10 files in torchvision's pickle layout (random pixels), since no real CIFAR-10 is available."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, n_per_batch).tolist(),
        }
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, fh)
    return folder


def test_cifar10_path_on_tensors_of_cifar_shape(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    _fake_cifar10(tmp_path)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)  # the md5s are of the real files
    spec = {
        "source": "torchvision",
        "name": "CIFAR10",
        "root": str(tmp_path),
        "val_fraction": 0.1,
        "normalize": {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2023, 0.1994, 0.2010]},
    }
    p = prepare_dataset("cifar10", spec)
    assert p.train.x.shape[1:] == (3, 32, 32) and p.train.x.dtype == torch.uint8
    assert len(p.train) + len(p.val) == 100 and len(p.test) == 20
    assert p.info.class_names[0] == "c0" and p.info.input_shape == (3, 32, 32)
    # the stored pixels are the pickled rows reshaped to (3, 32, 32)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as fh:
        first = pickle.load(fh)["data"]
    pos = int(np.flatnonzero(p.train.index.numpy() < 20)[0])
    np.testing.assert_array_equal(p.train.x[pos].numpy().reshape(-1), first[int(p.train.index[pos])])


def test_image_folder_source(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for cls in ("cat", "dog"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for k in range(n):
                Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(d / f"{k}.png")
    p = prepare_dataset(
        "pets",
        {
            "source": "folder",
            "name": "pets",
            "root": str(tmp_path),
            "image_size": [8, 8],
            "channels": 3,
            "val_fraction": 0.25,
        },
    )
    assert p.info.class_names == ["cat", "dog"] and p.train.x.shape[1:] == (3, 8, 8)
    assert len(p.train) + len(p.val) == 12 and len(p.test) == 4
    with pytest.raises(DataNotFoundError, match="does not exist"):
        prepare_dataset("pets", {"source": "folder", "name": "pets", "root": str(tmp_path / "none")})


def test_split_select_indices_follows_original_indices(digits):
    wanted = digits.train.index[[5, 2, 9]]
    sub = digits.train.select_indices(wanted)
    assert torch.equal(sub.index, wanted) and torch.equal(sub.y, digits.train.y[[5, 2, 9]])
    with pytest.raises(ValueError, match="not in this split"):
        digits.train.select_indices([10**6])
    with pytest.raises(ValueError, match="differ in length"):
        Split(torch.zeros(2, 1, 8, 8), torch.zeros(3, dtype=torch.long), torch.arange(2))
