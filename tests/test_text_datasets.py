"""``text`` and ``imdb``: sentences of 5-16 tokens, a training vocabulary, 85/5/10 split."""

from __future__ import annotations

import numpy as np
import pytest
from seqvae_plugins.likelihoods import CategoricalOptions
from seqvae_plugins.text_dataset import (
    END,
    PAD,
    SPECIALS,
    START,
    UNK,
    Imdb,
    Text,
    TextOptions,
    tokenize,
)

from seqvae.errors import UserError
from seqvae.registry import default_registry


def all_sentences(dataset) -> list[str]:
    """Every sentence of the three splits, decoded, sorted."""
    out = []
    for name in ("train", "valid", "test"):
        split = dataset.split(name)
        lengths = np.asarray(split.mask).sum(1).astype(int)  # n + 1 targets: the words and </S>
        out += [
            dataset.decode(row[1:t])
            for row, t in zip(np.asarray(split.u[..., 0]), lengths, strict=True)
        ]
    return sorted(out)


@pytest.fixture
def corpus(tmp_path):
    """200 lines of 1..20 words drawn from 30 words with Zipf-like frequencies."""
    rng = np.random.default_rng(0)
    words = [f"w{i:02d}" for i in range(30)]
    p = 1 / np.arange(1, 31)
    lines = [
        " ".join(rng.choice(words, size=int(n), p=p / p.sum()))
        for n in rng.integers(1, 21, size=200)
    ]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n\n")
    return path, [line.split() for line in lines]


def test_protocol_lengths_split_and_special_tokens(corpus):
    path, lines = corpus
    dataset = Text(path)
    kept = [tokens for tokens in lines if 5 <= len(tokens) <= 16]
    n = len(kept)
    sizes = [len(dataset.split(s)) for s in ("train", "valid", "test")]
    assert sizes == [n - round(0.05 * n) - round(0.10 * n), round(0.05 * n), round(0.10 * n)]
    assert dataset.vocab[:4] == list(SPECIALS) == ["<pad>", "<S>", "</S>", "<unk>"]
    assert dataset.classes == len(dataset.vocab) <= 4 + 30 and dataset.unit == "perplexity"
    train = dataset.split("train")
    assert train.x.shape == (sizes[0], 17, 1) and dataset.x_dim == 1
    u, x, mask = np.asarray(train.u[..., 0]), np.asarray(train.x[..., 0]), np.asarray(train.mask)
    targets = mask.sum(1).astype(int)
    assert (u[:, 0] == START).all() and ((targets >= 6) & (targets <= 17)).all()
    assert (x[np.arange(len(x)), targets - 1] == END).all()
    np.testing.assert_array_equal(u[:, 1:], x[:, :-1])
    assert (x[mask == 0] == PAD).all() and not (x[mask == 1] == PAD).any()
    # every split together holds each kept sentence once, in some order
    assert all_sentences(dataset) == sorted(" ".join(t) for t in kept)


def test_vocabulary_keeps_the_most_frequent_training_words(corpus):
    path, _ = corpus
    dataset = Text(path, TextOptions(vocabulary=5))
    assert dataset.classes == 9
    train = dataset.split("train")
    ids = np.asarray(train.x[..., 0])[np.asarray(train.mask) == 1]
    words = [dataset.vocab[i] for i in ids if i >= 4]
    counts = {w: words.count(w) for w in set(words)}
    # ranked by training frequency: the Zipf head, most frequent first
    assert dataset.vocab[4:] == sorted(counts, key=lambda w: (-counts[w], w))
    assert (ids == UNK).sum() > 0


def test_imdb_reviews_are_split_into_sentences(tmp_path):
    root = tmp_path / "aclImdb"
    reviews = {
        "train/pos/0_9.txt": (
            "A truly wonderful film about a dog.<br /><br />I loved every minute of it! Wow."
        ),
        "train/neg/1_2.txt": "This was the worst movie I have seen. Why did they make it?",
        "train/unsup/2_0.txt": "Nothing to say here , really , at all .",
        "test/pos/3_8.txt": "Great acting and a great story overall.",
    }
    for rel, text in reviews.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "imdb.vocab").write_text("the\n")
    dataset = Imdb(tmp_path)  # the folder above aclImdb will do
    sentences = all_sentences(dataset)
    # "Wow." has 2 tokens and is dropped; markup never reaches a token
    assert len(sentences) == 6
    assert tokenize("I loved every minute of it!") == [
        "i",
        "loved",
        "every",
        "minute",
        "of",
        "it",
        "!",
    ]
    assert tokenize("Don't <br /> stop") == ["don't", "<", "br", "/", ">", "stop"]
    assert not any("br" in s.split() for s in sentences)


def test_categorical_likelihood_needs_the_vocabulary_size(corpus):
    dataset = Text(corpus[0])
    categorical = default_registry().get("likelihood", "categorical").cls
    dataset.check_model(categorical, CategoricalOptions(classes=dataset.classes))
    fix = (
        "--set model.likelihood.component=categorical "
        f"--set model.likelihood.classes={dataset.classes}"
    )
    with pytest.raises(
        UserError, match=f"classes is 10000, but data set 'text' has {dataset.classes}.*{fix}"
    ):
        dataset.check_model(categorical, CategoricalOptions(classes=10000))
    with pytest.raises(
        UserError, match="'bernoulli' models binary values, but data set 'text' holds categorical"
    ):
        dataset.check_model(default_registry().get("likelihood", "bernoulli").cls)


def test_undecodable_text_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "a.txt").write_text("one two three four five\n")
    bad = tmp_path / "b.txt"
    bad.write_bytes(b"one two \xff\xfe three four five\n")
    with pytest.raises(UserError, match="b.txt: not UTF-8 text"):
        Text(tmp_path)


def test_decoded_text_and_tensorboard_samples_end_at_the_end_token(corpus):
    import torch

    from seqvae.samples import write_samples

    dataset = Text(corpus[0])
    first, second = dataset.vocab[4], dataset.vocab[5]
    ids = [4, PAD, 5, END, 4, 5, PAD]  # a sample runs on past </S>
    assert dataset.decode(ids) == f"{first} {second}"
    assert dataset.decode([END, 4]) == "" and dataset.decode([4, 5]) == f"{first} {second}"
    calls = []

    class Writer:
        def add_text(self, *args):
            calls.append(args)

    x = torch.tensor([ids, [5, END, END, 4, 4, 4, 4]], dtype=torch.float32)[..., None]
    write_samples(Writer(), dataset, "samples", x, step=3)
    assert calls == [("samples/text", f"    {first} {second}\n\n    {second}", 3)]
