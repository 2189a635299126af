"""The native LSTM cell (seqvae/csrc/lstm_cell.cpp) against the composed PyTorch cell."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from seqvae import native
from seqvae.nn import lstm_cell, lstm_cell_composed

BUILDABLE = (
    sys.platform == "linux"
    and torch.backends.cpu.get_cpu_capability() in native.CAPABILITY_FLAGS
    and shutil.which("c++") is not None
)


@pytest.fixture(scope="module")
def op():
    if not BUILDABLE:
        pytest.skip("no C++ compiler, or a CPU without AVX2/AVX-512: the composed cell is used")
    if not native.enabled():
        pytest.skip(f"{native.NATIVE_ENV}=0")
    built = native.lstm_cell_op()
    assert built is not None, "the native LSTM cell failed to build on a machine that can build it"
    return built


def _inputs(batch: int, hidden: int, dtype: torch.dtype, scale: float = 3.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    gates = (scale * torch.randn(batch, 4 * hidden, generator=g, dtype=dtype)).requires_grad_()
    c = torch.randn(batch, hidden, generator=g, dtype=dtype).requires_grad_()
    return gates, c


@pytest.mark.parametrize("hidden", [1, 5, 16, 37, 256])  # within one vector, whole vectors, and tails
def test_float64_values_and_gradients_match_the_composed_cell(op, hidden):
    gates, c = _inputs(7, hidden, torch.float64)
    h_ref, c_ref = lstm_cell_composed(gates, c)
    h, c_new = op(gates, c)
    torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-14)
    torch.testing.assert_close(c_new, c_ref, rtol=0, atol=1e-14)
    dh, dc = torch.randn_like(h), torch.randn_like(c_new)
    ref = torch.autograd.grad((h_ref * dh).sum() + (c_ref * dc).sum(), (gates, c))
    got = torch.autograd.grad((h * dh).sum() + (c_new * dc).sum(), (gates, c))
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


def test_gradcheck_with_either_output_unused(op):
    gates, c = _inputs(3, 5, torch.float64)
    assert torch.autograd.gradcheck(op, (gates, c))
    assert torch.autograd.gradcheck(lambda g, s: op(g, s)[0], (gates, c))  # c_new unused: a zero gradient
    assert torch.autograd.gradcheck(lambda g, s: op(g, s)[1], (gates, c))  # h unused


def test_float32_is_within_a_few_ulp_of_pytorch_including_saturation_and_tiny_inputs(op):
    gates, c = _inputs(64, 300, torch.float32, scale=4.0)
    special = torch.tensor([0.0, 1e-30, -1e-7, 1e-4, -0.2499, 0.25, 0.2501, 8.0, -8.0, 44.0, -50.0, 100.0, -1e4, 1e4])
    with torch.no_grad():
        gates[0, : special.numel()] = special  # input gate
        gates[1, 600 : 600 + special.numel()] = special  # cell candidate (tanh)
        c[2, : special.numel()] = special  # tanh(c_new)
    h_ref, c_ref = lstm_cell_composed(gates, c)
    h, c_new = op(gates, c)
    assert torch.isfinite(h).all() and torch.isfinite(c_new).all()
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(c_new, c_ref, rtol=1e-5, atol=2e-6)
    # near 0 tanh keeps its relative precision (1 - 2 / (e^2x + 1) alone would not)
    tiny = torch.zeros(1, 4 * 4)
    tiny[0, 8:12] = torch.tensor([1e-6, -3e-5, 1e-3, 0.1])
    _, c_tiny = op(tiny, torch.zeros(1, 4))
    torch.testing.assert_close(c_tiny, 0.5 * torch.tanh(tiny[:, 8:12]), rtol=1e-6, atol=0)
    dh, dc = torch.randn_like(h), torch.randn_like(c_new)
    ref = torch.autograd.grad((h_ref * dh).sum() + (c_ref * dc).sum(), (gates, c))
    got = torch.autograd.grad((h * dh).sum() + (c_new * dc).sum(), (gates, c))
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_non_contiguous_inputs_and_inference_mode(op):
    gates, c = _inputs(6, 8, torch.float64)
    wide = torch.cat([gates.detach(), gates.detach()], 1)[:, ::2]  # strided view with the same values
    with torch.inference_mode():
        h, c_new = op(wide, c.detach().t().contiguous().t())
    h_ref, c_ref = lstm_cell_composed(wide, c.detach())
    torch.testing.assert_close(h, h_ref.detach(), rtol=0, atol=1e-14)
    torch.testing.assert_close(c_new, c_ref.detach(), rtol=0, atol=1e-14)


def test_bad_shapes_name_the_op_and_what_was_expected(op):
    with pytest.raises(RuntimeError, match=r"seqvae::lstm_cell: gates .* do not match c .*expected \(B, 4H\)"):
        op(torch.zeros(2, 12), torch.zeros(2, 4))


def test_double_backward_is_refused_not_silently_zero(op):
    gates, c = _inputs(2, 3, torch.float64)
    h, _ = op(gates, c)
    (grad,) = torch.autograd.grad(h.sum(), gates, create_graph=False)
    assert grad.abs().sum() > 0
    h, _ = op(gates, c)
    with pytest.raises(RuntimeError, match="not twice differentiable"):
        torch.autograd.grad(h.sum(), gates, create_graph=True)


def test_lstm_cell_dispatches_to_native_on_cpu_and_composed_elsewhere(op, monkeypatch):
    gates, c = _inputs(2, 3, torch.float32)
    h, _ = lstm_cell(gates, c)
    assert "LSTMCellFunction" in h.grad_fn.name()
    h, _ = lstm_cell(gates.to(torch.bfloat16), c.to(torch.bfloat16))  # a dtype the kernel lacks
    assert type(h.grad_fn).__name__ == "MulBackward0"
    meta_h, _ = lstm_cell(torch.empty(2, 12, device="meta"), torch.empty(2, 3, device="meta"))
    assert meta_h.device.type == "meta"
    monkeypatch.setattr(native, "_op", None)  # as when the build failed or SEQVAE_NATIVE=0
    h, _ = lstm_cell(gates, c)
    assert type(h.grad_fn).__name__ == "MulBackward0"


def test_disabled_by_environment_and_failed_builds_warn_and_fall_back(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_op", native._UNSET)
    monkeypatch.setenv(native.NATIVE_ENV, "0")
    assert native.lstm_cell_op() is None
    if not BUILDABLE:
        return
    monkeypatch.setattr(native, "_op", native._UNSET)
    monkeypatch.setenv(native.NATIVE_ENV, "1")
    monkeypatch.setenv(native.DIR_ENV, str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.warns(RuntimeWarning, match=r"native LSTM cell .* could not be built.*SEQVAE_NATIVE=0"):
        assert native.lstm_cell_op() is None
    assert list(tmp_path.iterdir()) == []  # no half-written library left behind


def test_library_goes_to_a_temporary_folder_when_the_cache_folder_cannot_be_made(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(native.DIR_ENV, str(blocker / "native"))  # a folder under a file: mkdir fails
    assert native.native_dir().parent == Path(tempfile.gettempdir())
    monkeypatch.setenv(native.DIR_ENV, str(tmp_path / "native"))
    assert native.native_dir() == tmp_path / "native" and native.native_dir().is_dir()
