"""Where data is looked up, what a missing corpus says, and refusing a model that cannot fit."""

from __future__ import annotations

from pathlib import Path

import pytest
from seqvae_plugins.seqmnist_dataset import SeqMnist

from seqvae.cli import main, open_dataset, resolve_data_path
from seqvae.errors import UserError
from tests.datafiles import write_amat


def test_data_flag_wins_then_seqvae_data_then_local_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "timit").mkdir(parents=True)
    assert resolve_data_path("timit", None) == Path("data/timit")
    (tmp_path / "env" / "timit").mkdir(parents=True)
    monkeypatch.setenv("SEQVAE_DATA", str(tmp_path / "env"))
    assert resolve_data_path("timit", None) == tmp_path / "env" / "timit"
    (tmp_path / "mine").mkdir()
    assert resolve_data_path("timit", str(tmp_path / "mine")) == tmp_path / "mine"


def test_missing_data_lists_places_expected_files_and_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as error:
        resolve_data_path("seqmnist", None, SeqMnist.expected_files, SeqMnist.source_hint)
    text = str(error.value)
    assert str(tmp_path / "data" / "seqmnist") in text and "$SEQVAE_DATA is not set" in text
    assert "binarized_mnist_train.amat" in text and "Larochelle" in text
    with pytest.raises(
        UserError, match=r"--data nowhere: no such file or folder \(seqmnist expects"
    ):
        resolve_data_path("seqmnist", "nowhere", SeqMnist.expected_files)


def test_an_embedded_data_set_needs_no_place(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_data_path("chorales", None, embedded=True) is None
    (tmp_path / "data" / "chorales").mkdir(parents=True)
    assert resolve_data_path("chorales", None, embedded=True) == Path("data/chorales")


@pytest.mark.parametrize("name", ["timit", "blizzard", "audio-dir", "seqmnist", "text", "imdb"])
def test_every_corpus_not_found_exits_2_and_says_where_it_comes_from(
    name, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--model", "zforcing", "--dataset", name]) == 2
    err = capsys.readouterr().err
    assert f"no data for {name!r}" in err and "expects" in err and "Where to get it" in err


def test_binary_data_with_a_gaussian_model_exits_2_before_preparing(tmp_path, monkeypatch, capsys):
    import numpy as np

    for split in ("train", "valid", "test"):
        write_amat(tmp_path / f"binarized_mnist_{split}.amat", np.zeros((2, 784), np.uint8))
    # a Gaussian the user chose (the composition's own is swapped for the data's Bernoulli)
    args = ["train", "--model", "zforcing", "--dataset", "seqmnist", "--data", str(tmp_path)]
    assert main([*args, "--set", "model.likelihood.component=gaussian"]) == 2
    assert "--set model.likelihood.component=bernoulli" in capsys.readouterr().err
    assert not (tmp_path / "seqvae-cache").exists()  # refused before any preparation


def test_open_dataset_checks_the_composition(tmp_path):
    from tests.conftest import tiny

    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"a b c d e {i}\n" for i in range(40)))
    comp = tiny("zforcing", "model.likelihood.component=categorical", "model.likelihood.classes=7")
    # 4 special tokens, a..e, and the numbers of the 34 training sentences (85 % of 40)
    with pytest.raises(UserError, match=r"classes is 7, but data set 'text' has 43 classes"):
        open_dataset("text", str(path), comp)
