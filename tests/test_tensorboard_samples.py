"""Samples reach TensorBoard in the form their data reads best: audio, text or images."""

import torch

from seqvae.data import Dataset
from seqvae.samples import write_samples


class Recorder:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))


class Fake(Dataset):
    name = "fake"

    def split(self, name):
        raise NotImplementedError


class Speech(Fake):
    sample_rate = 16000

    def denormalise(self, x):
        return x * 0.5 + 0.25


class Words(Fake):
    support = "categorical"

    def decode(self, ids):
        return " ".join("abcdef"[i] for i in ids)


def test_speech_samples_are_un_normalised_audio_at_the_data_rate():
    writer = Recorder()
    x = torch.zeros(2, 3, 200)  # 2 sequences of 3 frames of 200 samples
    write_samples(writer, Speech(None, None), "samples", x, step=7)
    assert [c[0] for c in writer.calls] == ["add_audio", "add_audio"]
    name, (tag, wave, step), kwargs = writer.calls[0]
    assert tag == "samples/audio_0" and step == 7 and kwargs == {"sample_rate": 16000}
    assert wave.shape == (600,) and torch.all(wave == 0.25)


def test_word_samples_are_decoded_text():
    writer = Recorder()
    x = torch.tensor([[[0.0], [1.0], [2.0]], [[3.0], [4.0], [5.0]]])
    write_samples(writer, Words(None, None), "samples", x, step=1)
    (name, (tag, text, step), _), = writer.calls
    assert name == "add_text" and tag == "samples/text" and text == "    a b c\n\n    d e f"


def test_other_samples_are_images_with_features_up_and_time_right():
    writer = Recorder()
    x = torch.zeros(1, 5, 4)
    x[0, 2, 0] = 1.0  # step 2, lowest feature
    write_samples(writer, Fake(None, None), "samples", x, step=3)
    (name, (tag, image, step), _), = writer.calls
    assert name == "add_image" and image.shape == (1, 4, 5)
    assert image[0, 3, 2] == 1.0 and image.sum() == 1.0
