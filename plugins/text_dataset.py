"""The ``text`` and ``imdb`` data sets: sentences as sequences of word ids, scored by perplexity.

``text`` reads a ``.txt`` file, or every ``.txt`` file under a folder, one sentence per line;
``imdb`` reads the aclImdb folder (``train/`` and ``test/`` with ``pos/``, ``neg/``, ``unsup/``
reviews), drops the ``<br />`` markup and splits reviews into sentences at ``.``, ``!`` and
``?``. Both then apply the protocol of the Z-Forcing IMDB experiment:

- lower-cased word and punctuation tokens; sentences of 5 to 16 tokens are kept;
- all kept sentences shuffled with a fixed seed and split 85 / 5 / 10 % (train / valid / test);
- a vocabulary of the 16,000 most frequent training words (ties by spelling) plus ``<pad>``
  (id 0), ``<S>``, ``</S>`` and ``<unk>`` (ids 1-3): 16,004 classes;
- a sentence is u = <S> w_1 .. w_n, x = w_1 .. w_n </S>: n + 1 predicted tokens, padding masked.

Observations are word ids in a trailing dimension of 1 (categorical likelihood with
``classes`` equal to the vocabulary size); results are perplexities, exp(NLL / target tokens).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from seqvae import hookimpl
from seqvae.cache import cached, fingerprint
from seqvae.data import Dataset, Split, options_dict
from seqvae.errors import UserError

PROTOCOL_VERSION = 1
SPECIALS = ("<pad>", "<S>", "</S>", "<unk>")
PAD, START, END, UNK = range(len(SPECIALS))
TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*|[^\w\s]")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
MARKUP = re.compile(r"<br\s*/?>", re.IGNORECASE)
SPLITS = ("train", "valid", "test")


@dataclass
class TextOptions:
    vocabulary: int = 16000
    """Most frequent training words kept; the rest become <unk>."""
    min_tokens: int = 5
    max_tokens: int = 16
    valid_fraction: float = 0.05
    test_fraction: float = 0.10
    seed: int = 1234
    """Seed of the shuffle of sentences before the split."""


def tokenize(text: str) -> list[str]:
    """Lower-cased words (apostrophes kept inside a word) and punctuation marks."""
    return TOKEN.findall(text.lower())


class Text(Dataset):
    """Sentences of 5-16 tokens, one per line of .txt files; 16,000-word vocabulary; perplexity."""

    name = "text"
    Options = TextOptions
    unit = "perplexity"
    support = "categorical"
    likelihood = "categorical"
    expected_files = "a .txt file, or a folder of .txt files, with one sentence per line"
    source_hint = "any text corpus you hold"
    split_sentences = False
    """Split each line into sentences at . ! ? (reviews) instead of one sentence per line."""

    def __init__(self, path: Path | None, options: TextOptions | None = None) -> None:
        options = options or TextOptions()
        super().__init__(path, options)
        if options.vocabulary < 1 or not 1 <= options.min_tokens <= options.max_tokens:
            raise UserError(f"{self.name}: bad options {options}")
        if self.path is None or not self.path.exists():
            raise UserError(f"{self.name}: {self.path} not found; expected {self.expected_files}")
        files, root = self.documents()
        if not files:
            raise UserError(
                f"{self.path}: no text files; expected {self.expected_files}. {self.source_hint}"
            )
        key = {
            "dataset": self.name, "protocol": PROTOCOL_VERSION, "root": str(root.resolve()),
            "source": fingerprint(files, root), "options": options_dict(options),
        }  # fmt: skip
        self._folder, self._info = cached(self.name, key, lambda out: self._build(out, files))
        self.vocab: list[str] = json.loads((self._folder / "vocab.json").read_text())
        self.classes = len(self.vocab)
        self._splits: dict[str, Split] = {}

    def documents(self) -> tuple[list[Path], Path]:
        """The files to read and the folder they are named relative to."""
        if self.path.is_file():
            return [self.path], self.path.parent
        files = [p for p in self.path.rglob("*.txt") if p.is_file()]
        return sorted(files, key=lambda p: p.relative_to(self.path).as_posix()), self.path

    def sentences(self, path: Path) -> Iterator[list[str]]:
        """The token lists of one file."""
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise UserError(f"{path}: not UTF-8 text ({error})") from None
        except OSError as error:
            raise UserError(f"{path}: cannot read ({error})") from error
        for line in text.splitlines():
            if self.split_sentences:
                for sentence in SENTENCE_END.split(MARKUP.sub(" ", line)):
                    yield tokenize(sentence)
            else:
                yield tokenize(line)

    @property
    def x_dim(self) -> int:
        return 1

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise UserError(f"{self.name}: unknown split {name!r}; expected train, valid or test")
        if name not in self._splits:
            seq = np.load(self._folder / f"{name}.npy")  # (N, max_tokens + 2) word ids
            targets = np.load(self._folder / f"{name}.targets.npy")
            steps = seq.shape[1] - 1
            mask = (np.arange(steps)[None, :] < targets[:, None]).astype(np.float32)
            self._splits[name] = Split.shifted(seq[:, :, None], mask)
        return self._splits[name]

    def decode(self, ids) -> str:
        """Word ids back to text, up to the first ``</S>`` (not shown), padding dropped.

        A sampled sequence runs on for as many steps as were asked; what follows the end of
        the sentence is not part of it.
        """
        words = []
        for i in map(int, ids):
            if i == END:
                break
            if i != PAD:
                words.append(self.vocab[i])
        return " ".join(words)

    def _build(self, out: Path, files: list[Path]) -> dict:
        opts = self.options
        index: dict[str, int] = {}
        sentences: list[np.ndarray] = []
        for path in tqdm(files, desc=f"preparing {self.name}", unit="file", disable=None):
            for tokens in self.sentences(path):
                if opts.min_tokens <= len(tokens) <= opts.max_tokens:
                    ids = [index.setdefault(t, len(index)) for t in tokens]
                    sentences.append(np.array(ids, dtype=np.int32))
        if not sentences:
            raise UserError(
                f"{self.path}: no sentences of {opts.min_tokens}-{opts.max_tokens} tokens found"
            )
        n = len(sentences)
        order = np.random.default_rng(opts.seed).permutation(n)
        n_valid, n_test = round(opts.valid_fraction * n), round(opts.test_fraction * n)
        n_train = n - n_valid - n_test
        parts = {
            "train": order[:n_train], "valid": order[n_train : n_train + n_valid],
            "test": order[n_train + n_valid :],
        }  # fmt: skip
        # vocabulary from the training split only: most frequent first, ties by spelling
        words = list(index)
        train_ids = [sentences[i] for i in parts["train"]]
        counts = (
            np.bincount(np.concatenate(train_ids), minlength=len(words))
            if train_ids
            else np.zeros(len(words), int)
        )
        seen = [i for i in range(len(words)) if counts[i] > 0]
        kept = sorted(seen, key=lambda i: (-counts[i], words[i]))[: opts.vocabulary]
        remap = np.full(len(words), UNK, dtype=np.int32)
        remap[kept] = np.arange(len(SPECIALS), len(SPECIALS) + len(kept), dtype=np.int32)
        vocab = [*SPECIALS, *(words[i] for i in kept)]
        (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        width = opts.max_tokens + 2
        sizes = {}
        for name, rows in parts.items():
            seq = np.full((len(rows), width), PAD, dtype=np.int32)
            targets = np.zeros(len(rows), dtype=np.int32)
            for r, i in enumerate(rows):
                ids = remap[sentences[i]]
                seq[r, 0], seq[r, 1 : 1 + len(ids)], seq[r, 1 + len(ids)] = START, ids, END
                targets[r] = len(ids) + 1
            np.save(out / f"{name}.npy", seq)
            np.save(out / f"{name}.targets.npy", targets)
            sizes[name] = len(rows)
        return {"sizes": sizes, "classes": len(vocab), "sentences": n}


class Imdb(Text):
    """IMDB reviews (the aclImdb folder) split into sentences of 5-16 tokens; perplexity."""

    name = "imdb"
    expected_files = (
        "the aclImdb folder: train/ and test/ with pos/, neg/ (and unsup/) *.txt reviews"
    )
    source_hint = (
        "the Large Movie Review Dataset (aclImdb, Maas et al. 2011) is distributed by Stanford "
        "(https://ai.stanford.edu/~amaas/data/sentiment/); seqvae does not download it"
    )
    split_sentences = True

    def documents(self) -> tuple[list[Path], Path]:
        root = self.path / "aclImdb" if (self.path / "aclImdb").is_dir() else self.path
        files = [
            p for part in ("train", "test") for label in ("pos", "neg", "unsup")
            for p in (root / part / label).glob("*.txt")
        ]  # fmt: skip
        return sorted(files, key=lambda p: p.relative_to(root).as_posix()), root


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(Text)
    registry.add(Imdb)
