"""The ``audio-dir`` and ``blizzard`` data sets: any folder of audio files, framed like TIMIT.

Every wav/flac/sph/ogg/mp3 file under the folder (any depth; a user's LibriSpeech, VCTK or
Blizzard 2013 copy) is read, mixed to mono and resampled to 16 kHz with soxr where its rate
differs. Whole files are split with a fixed seed, 90 / 5 / 5 % for train / valid / test; each
split's audio is concatenated and cut into 200-sample frames and 40-frame rows (0.5 s), and
normalised with one global scalar mean and std of the training audio: the Blizzard protocol of
the VRNN and Z-Forcing papers (ELBO per 0.5 s sequence).

Preparation streams every file block by block into the on-disk cache, so a corpus larger than
memory (Blizzard is about 300 hours) is never held whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seqvae_plugins._audio import AudioDataset, Protocol, find_audio, prepare_audio, split_by_file

from seqvae import hookimpl
from seqvae.cache import cached, fingerprint
from seqvae.data import options_dict
from seqvae.errors import UserError

PROTOCOL_VERSION = 1


@dataclass
class AudioDirOptions:
    sample_rate: int = 16000
    """Hz; files at other rates are resampled."""
    frame: int = 200
    """Samples per frame (one step of the model)."""
    seq_frames: int = 40
    """Frames per training row."""
    valid_fraction: float = 0.05
    test_fraction: float = 0.05
    seed: int = 1234
    """Seed of the split of files."""


class AudioDir(AudioDataset):
    """Any folder of wav/flac/sph/ogg files: 16 kHz, 200-sample frames, 40-frame rows."""

    name = "audio-dir"
    Options = AudioDirOptions
    expected_files = (
        "audio files (*.wav, *.flac, *.sph, *.ogg, *.mp3) in the folder or its sub-folders"
    )
    source_hint = "any speech corpus you hold, e.g. LibriSpeech or VCTK"

    def __init__(self, path: Path | None, options: AudioDirOptions | None = None) -> None:
        options = options or AudioDirOptions()
        super().__init__(path, options)
        if self.path is None or not self.path.is_dir():
            raise UserError(
                f"{self.name}: {self.path} is not a folder; expected {self.expected_files}"
            )
        if min(options.sample_rate, options.frame, options.seq_frames) < 1:
            raise UserError(f"{self.name}: sample_rate, frame and seq_frames must be positive")
        files = find_audio(self.path)
        if not files:
            raise UserError(
                f"{self.path}: no audio files; expected {self.expected_files}. {self.source_hint}"
            )
        splits = split_by_file(files, options.seed, options.valid_fraction, options.test_fraction)
        key = {
            "dataset": self.name, "protocol": PROTOCOL_VERSION, "root": str(self.path.resolve()),
            "source": fingerprint(files, self.path), "options": options_dict(options),
        }  # fmt: skip
        protocol = Protocol(options.sample_rate, options.frame, options.seq_frames)
        folder, info = cached(
            self.name, key,
            lambda out: prepare_audio(
                out, splits, dict.fromkeys(splits, "rows"), protocol,
                desc=f"{self.name} ({len(files)} files)",
            ),
        )  # fmt: skip
        self._open_cache(folder, info)


class Blizzard(AudioDir):
    """Blizzard 2013 audiobook speech: 16 kHz, 8000-sample rows (40 x 200), ELBO per 0.5 s."""

    name = "blizzard"
    expected_files = (
        "the Blizzard Challenge 2013 audio (wav, flac or mp3 files, any sub-folders; the "
        "segmented release of about 300 hours)"
    )
    source_hint = (
        "Blizzard 2013 is licensed by the Blizzard Challenge organisers "
        "(https://www.cstr.ed.ac.uk/projects/blizzard/); seqvae does not download it"
    )


@hookimpl
def seqvae_register(registry) -> None:
    registry.add(AudioDir)
    registry.add(Blizzard)
