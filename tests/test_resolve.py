"""train, bench and eval resolve a composition the same way: preset, data requirements, --set."""

import json

import numpy as np
import pytest

from seqvae.cli import main, open_dataset
from seqvae.composition import builtin_compositions, published_numbers
from seqvae.errors import UserError
from seqvae.resolve import paper_number, preset_overrides, resolve_composition
from seqvae.testing.data import write_demo_npz
from seqvae.testing.shrink import shrink
from seqvae.train import train
from tests.datafiles import sphere_bytes, write_amat, write_ldc_tree


def write_music_json(path, seed=0, pieces=(12, 4, 4)):
    """The Boulanger-Lewandowski layout as JSON: split -> pieces -> steps -> MIDI notes."""
    rng = np.random.default_rng(seed)
    data = {
        split: [[sorted({int(n) for n in rng.integers(40, 80, size=rng.integers(0, 4))})
                 for _ in range(int(rng.integers(6, 14)))] for _ in range(count)]
        for split, count in zip(("train", "valid", "test"), pieces, strict=True)
    }  # fmt: skip
    path.write_text(json.dumps(data))
    return path


def write_text(path, seed=0):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(12)]
    path.write_text("\n".join(" ".join(rng.choice(words, size=int(n))) for n in rng.integers(5, 12, 120)))
    return path


def write_sph_folder(root, files=24, samples=9000):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(files):
        audio = (rng.standard_normal(samples) * 3000).astype(np.int16)
        (root / f"u{i:02d}.sph").write_bytes(sphere_bytes(audio))
    return root


def write_mnist(root):
    rng = np.random.default_rng(0)
    root.mkdir()
    for split, n in (("train", 12), ("valid", 4), ("test", 4)):
        write_amat(root / f"binarized_mnist_{split}.amat", (rng.random((n, 784)) < 0.3).astype(int))
    return root


def data_fixtures(tmp_path):
    """A small copy of what every built-in data set reads: {dataset: path or None}."""
    music = write_music_json(tmp_path / "music.json")
    imdb = tmp_path / "aclImdb" / "train" / "pos"
    imdb.mkdir(parents=True)
    for i in range(30):
        (imdb / f"{i}_9.txt").write_text(write_text(tmp_path / "tmp.txt", seed=i).read_text().replace("\n", ". "))
    write_ldc_tree(tmp_path / "timit", train=(1, 2, 5), test=(1, 1, 3))
    mnist = write_mnist(tmp_path / "mnist")
    pickle_path = tmp_path / "JSB Chorales.pickle"
    import pickle

    pickle_path.write_bytes(pickle.dumps({k: [[tuple(c) for c in p] for p in v]
                                          for k, v in json.loads(music.read_text()).items()}, protocol=2))  # fmt: skip
    return {
        "timit": tmp_path / "timit", "blizzard": write_sph_folder(tmp_path / "blizzard", samples=20000),
        "audio-dir": write_sph_folder(tmp_path / "speech"), "seqmnist": mnist, "seqmnist-pixel": mnist,
        "text": write_text(tmp_path / "corpus.txt"), "imdb": tmp_path / "aclImdb",
        "chorales": pickle_path, "npz": write_demo_npz(tmp_path / "toy.npz", dims=3, steps=8),
        "jsb": music, "nottingham": music, "musedata": music, "piano-midi": music,
    }  # fmt: skip


@pytest.mark.slow
def test_every_builtin_model_trains_on_every_builtin_dataset_as_typed(tmp_path):
    """`seqvae train --model M --dataset D` needs no --set for any built-in M and D: the data
    set's preset and requirements make the likelihood fit; sizes are then shrunk for speed."""
    from seqvae.registry import default_registry

    fixtures = data_fixtures(tmp_path)
    registered = {entry.name for entry in default_registry().entries("dataset")}
    assert registered <= set(fixtures), f"no fixture for {registered - set(fixtures)}"
    for name in sorted(registered):
        dataset = open_dataset(name, str(fixtures[name]))
        for model in builtin_compositions():
            comp = resolve_composition(model, dataset, name)  # as typed: no --set at all
            tiny = shrink(comp, overrides=["train.eval_every=0", "train.batch_size=4"])
            result = train(tiny, dataset, tmp_path / "runs" / f"{model}-{name}", max_steps=1, progress=False)
            assert result.step == 1 and np.isfinite(result.last_loss), (model, name)


def test_the_issue_commands_run_as_typed(tmp_path, capsys):
    corpus = write_text(tmp_path / "corpus.txt")
    for extra in ([], ["--set", "model.likelihood.component=categorical"]):
        status = main(["train", "--model", "rnn", "--dataset", "text", "--data", str(corpus), "--max-steps", "2",
                       "--set", "model.decoder.hidden=16", "--out", str(tmp_path / f"text{len(extra)}"), *extra])  # fmt: skip
        assert status == 0, capsys.readouterr().err
    saved = (tmp_path / "text2" / "config.yaml").read_text()
    assert "component: categorical" in saved and f"classes: {open_dataset('text', str(corpus)).classes}" in saved
    music = write_music_json(tmp_path / "m.json")
    assert main(["train", "--model", "rnn", "--dataset", "jsb", "--data", str(music), "--max-steps", "2",
                 "--out", str(tmp_path / "jsb")]) == 0  # fmt: skip
    assert "component: bernoulli" in (tmp_path / "jsb" / "config.yaml").read_text()


def test_layers_apply_in_order_and_the_user_wins(tmp_path):
    dataset = open_dataset("npz", str(write_demo_npz(tmp_path / "toy.npz", dims=3, steps=8)))
    preset = preset_overrides(None, "chorales", "rnn")
    assert "model.decoder.hidden=128" in preset
    comp = resolve_composition("rnn", dataset, "chorales")
    assert comp.slots["decoder"].options.hidden == 128 and comp.slots["likelihood"].component == "gaussian"
    comp = resolve_composition("rnn", dataset, "chorales", overrides=["model.decoder.hidden=64"])
    assert comp.slots["decoder"].options.hidden == 64
    paper = resolve_composition("srnn", dataset, "jsb")  # jsb's own preset is `paper`
    assert paper.latent_dim == 100 and paper.train.lr_decay.start == 20 and paper.objective.kl_weight.per == "epoch"


def test_a_likelihood_the_user_chose_that_cannot_fit_gets_the_complete_fix(tmp_path, capsys):
    music = write_music_json(tmp_path / "m.json")
    status = main(["train", "--model", "rnn", "--dataset", "jsb", "--data", str(music), "--max-steps", "1",
                   "--set", "model.likelihood.component=gaussian", "--out", str(tmp_path / "x")])  # fmt: skip
    assert status == 2 and "--set model.likelihood.component=bernoulli" in capsys.readouterr().err
    corpus = write_text(tmp_path / "corpus.txt")
    classes = open_dataset("text", str(corpus)).classes
    status = main(["train", "--model", "rnn", "--dataset", "text", "--data", str(corpus), "--max-steps", "1",
                   "--set", "model.likelihood.classes=5", "--out", str(tmp_path / "y")])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 2 and f"--set model.likelihood.component=categorical --set model.likelihood.classes={classes}" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_presets_that_do_not_apply_are_refused(tmp_path):
    with pytest.raises(UserError, match="unknown preset"):
        preset_overrides("no-such-preset", "jsb", "rnn")
    with pytest.raises(UserError, match="no settings for data set 'chorales'"):
        preset_overrides("paper", "chorales", "rnn")


def test_the_paper_number_needs_the_data_it_was_measured_on(tmp_path):
    dataset = open_dataset("jsb", str(write_music_json(tmp_path / "m.json")))
    published = {"jsb": {"rnn": 1.0}, "by_data": {dataset.fingerprint: {"unit": "nats per step", "storn": 2.0}}}
    assert paper_number(published, "jsb", dataset, "storn") == 2.0
    assert paper_number(published, "jsb", dataset, "rnn") == 1.0
    other = open_dataset("jsb", str(write_music_json(tmp_path / "n.json", seed=1)))
    assert paper_number(published, "jsb", other, "storn") is None
    assert paper_number(published_numbers(), "jsb", other, "rnn") is None  # the shipped table too
    assert "chorales" not in published_numbers()  # music21's chorales are not the papers' data


def test_a_users_file_wins_over_the_preset_for_the_keys_it_sets(tmp_path):
    dataset = open_dataset("npz", str(write_demo_npz(tmp_path / "toy.npz", dims=3, steps=8)))
    base = tmp_path / "base.yaml"
    base.write_text("base: zforcing\nmodel:\n  decoder: {hidden: 40}\n")
    mine = tmp_path / "rnn.yaml"  # named like a built-in: still a user's file
    mine.write_text(f"base: {base}\ntrain: {{batch_size: 8}}\nmodel:\n  likelihood: {{component: gaussian}}\n")
    comp = resolve_composition(str(mine), dataset, "chorales")
    assert comp.train.batch_size == 8  # the chorales preset says 16
    assert comp.slots["decoder"].options.hidden == 40  # from the user's base file, not the preset's 128
    assert comp.train.lr == 3e-3  # what the files do not set, the preset fills in
    assert comp.slots["encoder"].options.hidden == 1024  # no per-model preset for a user's file
    assert resolve_composition(str(mine), dataset, "chorales", overrides=["train.batch_size=4"]).train.batch_size == 4
    music = open_dataset("jsb", str(write_music_json(tmp_path / "m.json")))
    with pytest.raises(UserError, match="--set model.likelihood.component=bernoulli"):
        resolve_composition(str(mine), music, "jsb")  # the file chose a Gaussian: refused, not swapped
