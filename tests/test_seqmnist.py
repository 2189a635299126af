"""``seqmnist``: binarised MNIST from .amat or IDX files, row by row or pixel by pixel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from seqvae_plugins.seqmnist_dataset import SeqMnist, SeqMnistOptions, SeqMnistPixel, binarise

from seqvae.errors import UserError
from seqvae.registry import default_registry
from tests.datafiles import write_amat, write_idx


@pytest.fixture
def amat(tmp_path):
    rng = np.random.default_rng(0)
    images = {
        s: (rng.random((n, 784)) < 0.3).astype(np.uint8)
        for s, n in (("train", 6), ("valid", 2), ("test", 3))
    }
    for split, array in images.items():
        write_amat(tmp_path / f"binarized_mnist_{split}.amat", array)
    return tmp_path, images


def test_amat_rows_are_28_steps_of_28_pixels_predicted_from_zeros(amat):
    folder, images = amat
    dataset = SeqMnist(folder)
    assert dataset.source == "amat" and dataset.unit == "nats per image" and dataset.x_dim == 28
    for split, n in (("train", 6), ("valid", 2), ("test", 3)):
        data = dataset.split(split)
        assert data.x.shape == (n, 28, 28) and data.steps == n * 28
        np.testing.assert_array_equal(data.x, images[split].reshape(n, 28, 28))
        assert not np.asarray(data.u[:, 0]).any()
        np.testing.assert_array_equal(data.u[:, 1:], data.x[:, :-1])
    batch = next(dataset.split("train").batches(4))
    assert batch.x.shape == (28, 4, 28) and batch.x.dtype == torch.float32


def test_pixel_order_is_784_steps_of_one_pixel(amat):
    folder, images = amat
    test = SeqMnistPixel(folder).split("test")
    assert test.x.shape == (3, 784, 1)
    np.testing.assert_array_equal(test.x[..., 0], images["test"])
    assert SeqMnist(folder, SeqMnistOptions(order="pixel")).x_dim == 1


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0 1 2" + " 0" * 781, "line 2: expected only 0 and 1 values"),
        (" ".join(["0", "1"] * 10), "line 2 has 20 values; expected 784"),
    ],
)
def test_bad_amat_line_is_an_error_naming_file_and_line(amat, line, message):
    folder, images = amat
    path = folder / "binarized_mnist_valid.amat"
    lines = path.read_text().splitlines()
    lines[1] = line
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=message) as error:
        SeqMnist(folder)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_are_binarised_once_with_a_fixed_seed(tmp_path, monkeypatch, gz):
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    test = np.full((6, 28, 28), 64, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", train, gz=gz)
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", test, gz=gz)
    first = SeqMnist(tmp_path)
    assert first.source == "idx"
    # the last sixth of the training images is the validation split: 10 / 2 / 6
    assert [len(first.split(s)) for s in ("train", "valid", "test")] == [10, 2, 6]
    # binarisation: a pixel of intensity 64 is on with probability 64/255
    assert np.asarray(first.split("test").x).mean() == pytest.approx(64 / 255, abs=0.02)
    assert not np.asarray(first.split("train").x)[train.reshape(12, 28, 28)[:10] == 0].any()
    # fixed: a fresh preparation (another cache) binarises identically
    monkeypatch.setenv("SEQVAE_CACHE", str(tmp_path / "other"))
    again = SeqMnist(tmp_path)
    np.testing.assert_array_equal(again.split("valid").x, first.split("valid").x)
    np.testing.assert_array_equal(binarise(train, 0), binarise(train, 0))


def test_truncated_idx_file_is_an_error_naming_it(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 28, 28), np.uint8))
    path = write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((4, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UserError, match="truncated: the header says 4 images") as error:
        SeqMnist(tmp_path)
    assert str(path) in str(error.value)


def test_folder_without_mnist_files_names_what_it_expects(tmp_path):
    with pytest.raises(UserError, match=r"binarized_mnist_train\.amat.*train-images-idx3-ubyte"):
        SeqMnist(tmp_path)


def test_binary_data_refuses_a_gaussian_likelihood(amat):
    dataset = SeqMnist(amat[0])
    registry = default_registry()
    with pytest.raises(UserError, match=r"'gaussian' models real values, but data set 'seqmnist' "
                                        r"holds binary.*"
                                        r"--set model.likelihood.component=bernoulli"):  # fmt: skip
        dataset.check_model(registry.get("likelihood", "gaussian").cls)
    dataset.check_model(registry.get("likelihood", "bernoulli").cls)
    with pytest.raises(UserError, match="has 28 features per step; the model was built for 784"):
        dataset.check_model(x_dim=784)


def test_a_sample_reads_back_as_the_image(amat):
    folder, images = amat
    for dataset in (SeqMnist(folder), SeqMnistPixel(folder)):
        x = torch.from_numpy(np.asarray(dataset.split("test").x[1], dtype=np.float32))
        image = dataset.sample_image(x)
        np.testing.assert_array_equal(image.numpy(), images["test"][1].reshape(28, 28))


def test_data_options_from_the_command_line_reach_the_data_set(amat):
    from seqvae.cli import open_dataset

    folder, _ = amat
    assert open_dataset("seqmnist", str(folder), options=["order=pixel"]).x_dim == 1
    with pytest.raises(UserError, match=r"--data-option: seqmnist.order: expected one of 'row', 'pixel', got 'diagonal'"):
        open_dataset("seqmnist", str(folder), options=["order=diagonal"])
