"""Hostile and broken configuration: random YAML documents and ``--set`` values end in a valid
composition or in one ``seqvae: error:`` line with exit status 2, never a traceback; and no
string of a config is imported, evaluated or executed."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import seqvae.train
from seqvae.cli import main
from seqvae.composition import Composition, load_composition, validate
from seqvae.errors import UserError
from seqvae.registry import KINDS, default_registry
from seqvae.testing.data import write_demo_npz
from seqvae.yamlio import dump_yaml, loads

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
"""Deterministic (the same examples on every run, in CI too) and a few seconds per property."""

BASE = load_composition("zforcing").to_dict()


def _paths(node, prefix=()):
    """Every dotted path of a composition, mappings included."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))


PATHS = sorted(set(_paths(BASE)))
WORDS = sorted({part for path in PATHS for part in path} | {"base", "weight", "options", "aux"}
               | {e.name for kind in KINDS for e in default_registry().entries(kind)})  # fmt: skip

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)  # no lone surrogates: not UTF-8
scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | text
           | st.sampled_from(WORDS) | st.sampled_from(["zforcing", "update", "epoch", "1e-3", ".nan", "-.inf"]))  # fmt: skip
keys = st.sampled_from(WORDS) | text | st.integers(-3, 3) | st.booleans() | st.none()
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
                      max_leaves=12)  # fmt: skip


@st.composite
def mutated(draw) -> dict:
    """A valid composition with a few values replaced, removed or added: near misses, which
    get past the first checks."""
    doc = json.loads(json.dumps(BASE))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        node = doc
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        action = draw(st.sampled_from(["near", "near", "any", "remove"]))
        if action == "remove":
            node.pop(path[-1], None)
        else:
            node[path[-1]] = draw(_near(node.get(path[-1])) if action == "near" else values)
    return doc


def _near(value):
    """Values of the type a key holds: they pass the type checks and probe the limits."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(-2, 5000)
    if isinstance(value, float):
        return st.floats()  # NaN, infinities, negative, tiny and huge
    if isinstance(value, str):
        return st.sampled_from(WORDS)
    return values


documents = (
    mutated().map(dump_yaml)
    | mutated().map(dump_yaml)
    | st.dictionaries(keys, values, max_size=5).map(lambda d: yaml.safe_dump(d, allow_unicode=True))
    | values.map(lambda v: yaml.safe_dump(v, allow_unicode=True))
    | text  # anything at all, mostly not YAML
)
override_values = scalars.map(lambda v: yaml.safe_dump(v, default_flow_style=True).removesuffix("\n...\n").strip()) | text
override_keys = st.sampled_from([".".join(map(str, p)) for p in PATHS]) | st.lists(keys.map(str), min_size=1, max_size=4).map(".".join)
overrides = st.lists(st.tuples(override_keys, override_values).map("=".join) | text, max_size=3)


def _check_one_line(error: BaseException) -> None:
    message = str(error)
    assert message and "\n" not in message and "Traceback" not in message, message


def _check_valid(comp: Composition) -> None:
    """A valid composition: it validates again from its own resolved form, which is plain
    strict JSON (what config.yaml, checkpoints and bench identities hold)."""
    assert isinstance(comp, Composition)
    plain = comp.to_dict()
    json.dumps(plain, allow_nan=False, default=str)
    again = validate(loads(dump_yaml(plain)), default_registry(), source="again")
    assert again.to_dict() == plain


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return write_demo_npz(tmp_path_factory.mktemp("fuzz-data") / "toy.npz", dims=3, steps=12)


@FUZZ
@given(document=documents, items=overrides)
def test_the_loader_gives_a_composition_or_a_one_line_error(tmp_path, document, items):
    path = tmp_path / "model.yaml"
    path.write_text(document, encoding="utf-8")
    try:
        comp = load_composition(str(path), items)
    except UserError as error:
        event("refused")  # pytest --hypothesis-show-statistics: how often each outcome was reached
        _check_one_line(error)
    else:
        event("a valid composition")
        _check_valid(comp)


class Reached(UserError):
    pass


@FUZZ
@given(document=documents, items=overrides, data_items=st.lists(st.sampled_from(["support", "unit", "x"]).flatmap(
    lambda k: override_values.map(lambda v: f"{k}={v}")), max_size=1))  # fmt: skip
def test_train_gives_exit_2_and_one_line_for_any_config(tmp_path, npz, monkeypatch, capsys, document, items, data_items):
    seen = []

    def no_training(comp, *args, **kwargs):  # the property is about the config; stop here
        seen.append(comp)
        raise Reached("the composition is valid")

    monkeypatch.setattr(seqvae.train, "train", no_training)
    path = tmp_path / "model.yaml"
    path.write_text(document, encoding="utf-8")
    argv = ["train", "--model", str(path), "--dataset", "npz", "--data", str(npz), "--out", str(tmp_path / "run"),
            *(a for item in items for a in ("--set", item)), *(a for item in data_items for a in ("--data-option", item))]  # fmt: skip
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("seqvae: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    event("reached training" if seen else "refused")
    if seen:
        assert err == "seqvae: error: the composition is valid\n"
        _check_valid(seen[0])


# Each crash the properties found, kept as an example: (YAML file, --set items, the message).
NESTED = "a: " + "[" * 2000 + "]" * 2000
# 8**7 strings in 7 short lines (a "billion laughs" is 8**9 and more)
LAUGHS = "base: zforcing\ndescription:\n  - &a [x, x, x, x, x, x, x, x]\n" + "".join(
    f"  - &{c} [{', '.join([f'*{p}'] * 8)}]\n" for p, c in zip("abcdef", "bcdefg", strict=True)
)  # fmt: skip
REGRESSIONS = [
    ("base: zforcing\nobjective: {kl_weight: .nan}\n", [], "objective.kl_weight: expected a finite number, got nan"),
    ("base: zforcing\nobjective: {kl_weight: .inf}\n", [], "objective.kl_weight: expected a finite number, got inf"),
    ("base: zforcing\n", ["objective.free_bits=.nan"], "objective.free_bits: expected a finite number, got nan"),
    ("base: zforcing\n", ["model.likelihood.logvar_bound=-.inf"], "logvar_bound: expected a finite number, got -inf"),
    ("base: zforcing\n", ["objective.free_bits=-1"], "objective: free_bits: expected a number >= 0"),
    ("base: zforcing\n", ["objective.kl_weight=1e400"], "objective.kl_weight: expected a finite number, got inf"),
    ("base: zforcing\n", ["train.lr=" + "9" * 400], "train.lr: expected a finite number"),
    ("base: zforcing\ntrain: {lr: 2001-13-45}\n", [], "not valid YAML: ValueError: month must be in 1..12"),
    ("base: zforcing\n", ["train.lr=2001-02-30"], "--set train.lr: not valid YAML: ValueError: day is out of range"),
    ("a: [1, 2\nb: c\n", [], "not valid YAML: while parsing a flow sequence; expected ',' or ']', but got ':' at line 2"),
    ("base: zforcing\n", ["train.lr=[1, 2"], "--set train.lr: not valid YAML:"),
    (NESTED, [], "not valid YAML: nested too deeply"),
    ("base: zforcing\ndescription: &a [*a]\n", [], "nested too deeply for a composition"),
    (LAUGHS, [], "too large for a composition (more than 100000 values with its aliases expanded"),
    ("base: zforcing\ndescription: [1, 2]\n", [], "description: expected text, got a list"),
    ('base: zforcing\n"a\\nb": 1\n', [], "'a\\nb': unknown key"),
    ("base: zforcing\nmodel: {aux: {3: {component: backward-lm}}}\n", [], "model.aux.3: expected a name"),
    ("base: zforcing\n", ["model..hidden=3"], "--set 'model..hidden=3': expected KEY=VALUE with a dotted KEY"),
    ("base: zforcing\n", ["model.decoder.hidden.x=3"], "--set model.decoder.hidden.x: model.decoder.hidden is not a mapping (it holds 1024)"),
    ("base: zforcing\n", ["model.prior.hidden\n=3"], "model.prior.'hidden\\n': unknown option; did you mean 'hidden'?"),
    (b"\xff\xfe model", [], "not a YAML file (not UTF-8 text: byte 0 is 0xff)"),
]  # fmt: skip


@pytest.mark.parametrize("document, items, message", REGRESSIONS)
def test_regressions_found_by_the_properties(tmp_path, document, items, message):
    path = tmp_path / "model.yaml"
    if isinstance(document, bytes):
        path.write_bytes(document)
    else:
        path.write_text(document)
    with pytest.raises(UserError) as error:
        load_composition(str(path), items)
    _check_one_line(error.value)
    assert message in str(error.value)


CLI_REGRESSIONS = [
    ("model: 1\n", [], "model: expected a mapping of slots"),  # crashed in the likelihood fitting
    ("base: zforcing\n", ["model=[1, 2]"], "model: expected a mapping of slots"),
    ("base: zforcing\n", ["-3.x=1"], "seqvae train: argument --set: expected one argument (see seqvae train --help)"),
]  # fmt: skip


@pytest.mark.parametrize("document, items, message", CLI_REGRESSIONS)
def test_cli_regressions_found_by_the_properties(tmp_path, npz, capsys, document, items, message):
    path = tmp_path / "model.yaml"
    path.write_text(document)
    argv = ["train", "--model", str(path), "--dataset", "npz", "--data", str(npz), "--out", str(tmp_path / "run"),
            *(a for item in items for a in ("--set", item))]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("seqvae: error: ") and err.count("\n") == 1 and message in err, err


def test_no_string_of_a_config_is_imported_or_executed(tmp_path, monkeypatch, capsys, npz):
    """A component, a data option or a YAML tag that names code is only ever a name."""
    marker = tmp_path / "ran"
    (tmp_path / "acme_payload.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    payload = f"!!python/object/apply:os.system ['touch {marker}']"
    attempts = [
        ("model: {decoder: {component: acme_payload}}\n", []),
        ("base: zforcing\n", ["model.decoder.component=acme_payload"]),
        ("base: zforcing\n", ["model.decoder.component=acme_payload:Decoder"]),
        ("base: zforcing\n", [f"model.decoder.hidden={payload}"]),
        (f"base: zforcing\ndescription: {payload}\n", []),
        ("base: acme_payload\n", []),
    ]
    for document, items in attempts:
        path = tmp_path / "model.yaml"
        path.write_text(document)
        argv = ["train", "--model", str(path), "--dataset", "npz", "--data", str(npz), "--out", str(tmp_path / "run"),
                *(a for item in items for a in ("--set", item))]  # fmt: skip
        assert main(argv) == 2
        assert capsys.readouterr().err.startswith("seqvae: error: ")
    assert main(["train", "--model", "zforcing", "--dataset", "npz", "--data", str(npz),
                 "--data-option", f"support={payload}"]) == 2  # fmt: skip
    assert "not valid YAML: could not determine a constructor" in capsys.readouterr().err
    assert not marker.exists()
