# tests/test_conformance.py
from pathlib import Path

from seqvae_example.synthetic import write_sines

from seqvae.testing import conformance

HERE = Path(__file__).resolve().parents[1]


def test_poe_prior_conforms():  # swapped into the prior slot of a built-in composition
    conformance.check_component("prior", "poe")


def test_zforcing_poe_conforms():
    conformance.check_composition(HERE / "zforcing-poe.yaml")


def test_csv_sequences_conform(tmp_path):
    conformance.check_dataset("csv-sequences", write_sines(tmp_path / "data", files=6))
