"""int4 weights: the asymmetric split (quant.GroupOffsetLinear) reproduces 4-bit asymmetric grouped weights exactly."""

import pytest
import torch
from torch import nn

from exporter.quant import GroupOffsetLinear, _config
from exporter.spec import QuantSpec


def q4_1_linear(out_f=48, in_f=96, group=32, seed=0):
    """A linear whose weights lie on a Q4_1 grid (w = d * q + m, q in 0..15, both ends used in every group)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (out_f, in_f // group, group), generator=g)
    q[..., 0], q[..., 1] = 0, 15
    d = torch.rand(out_f, in_f // group, 1, generator=g) * 0.02 + 1e-3
    m = torch.randn(out_f, in_f // group, 1, generator=g) * 0.05
    lin = nn.Linear(in_f, out_f, bias=False)
    with torch.no_grad():
        lin.weight.copy_((d * q + m).view(out_f, in_f))
    return lin


def dequantized(module: nn.Linear) -> torch.Tensor:
    w = module.weight
    return w.dequantize() if hasattr(w, "dequantize") else w.detach()


def test_split_is_the_same_linear_in_float():
    lin = q4_1_linear()
    x = torch.randn(3, 5, 96)
    torch.testing.assert_close(GroupOffsetLinear(lin, 32)(x), lin(x), atol=1e-5, rtol=1e-5)


def test_split_recovers_q4_1_codes_exactly_where_symmetric_int4_cannot():
    from torchao.quantization.quant_api import quantize_

    lin = q4_1_linear()
    w = lin.weight.detach().clone()
    split = GroupOffsetLinear(lin, 32)
    quantize_(split.main, _config("8da4w_exact", 32))
    main = dequantized(split.main)  # [W_c; G]: the symmetric part, then the 0/1 group-sum rows, both int4 codes
    g = torch.eye(3).repeat_interleave(32, dim=1)
    assert torch.equal(main[48:], g)  # the group-sum rows come through int4 exactly (codes 0 and 7 at scale 1/7)
    rebuilt = main[:48] + split.offset.weight @ g
    assert (rebuilt - w).abs().max() < 1e-6  # measured 4e-8 (float rounding) on weights up to 0.44
    sym = q4_1_linear()
    quantize_(sym, _config("8da4w", 32))
    assert (dequantized(sym) - w).abs().max() > 1e-2  # the plain symmetric grid re-rounds the codes (measured 0.04)


@pytest.mark.parametrize("mode,merged,kinds", [("asymmetric", False, {"GroupOffsetLinear"}),
                                               ("symmetric", False, set()),
                                               ("asymmetric", True, set())])  # merged LoRA: symmetric, see below
def test_quantize_int4_mode(mode, merged, kinds, tiny_llama):
    from exporter.arch import ArchConfig, build_decoder
    from exporter.load import load_base
    from exporter.quant import quantize

    base = load_base(str(tiny_llama))
    dec = build_decoder(ArchConfig.from_hf(base.config, 64), base.model.state_dict())
    counts = quantize(dec, QuantSpec("int4", int4_weights=mode), merged_adapter=merged)
    assert counts["8da4w"] == 7 * base.config.num_hidden_layers
    found = {type(m).__name__ for m in dec.modules()} & {"GroupOffsetLinear"}
    assert found == kinds
    out = dec(torch.tensor([[1, 2, 3]]), torch.tensor([0]))
    assert torch.isfinite(out).all()


def test_asymmetric_grid_erases_a_merged_delta_the_symmetric_grid_keeps():
    """Why merged programs get symmetric int4: a LoRA delta far below one 4-bit step (the trained adapters': |dW| <=
    0.012, mean step 0.074), added to Q4_1 weights, is rounded back onto the base's grid by min-max codes, so
    the adapter mostly vanishes; a symmetric grid, unaligned with the base's, keeps it on average (unbiased, under
    noise)."""
    base = q4_1_linear(out_f=64, in_f=256, seed=3).weight.detach().view(64, 8, 32)
    step = ((base.amax(-1, keepdim=True) - base.amin(-1, keepdim=True)) / 15).mean()
    torch.manual_seed(4)
    delta = torch.randn(64, 4) @ torch.randn(4, 256)  # low rank, like B @ A
    delta = (0.05 * step * delta / delta.std()).view(64, 8, 32)
    merged = base + delta
    lo, d = merged.amin(-1, keepdim=True), (merged.amax(-1, keepdim=True) - merged.amin(-1, keepdim=True)) / 15
    asym = torch.round((merged - lo) / d) * d + lo  # min-max codes: what GroupOffsetLinear / int4_with_offsets store
    s = merged.abs().amax(-1, keepdim=True) / 8
    sym = torch.clamp(torch.round(merged / s), -8, 7) * s
    x = torch.randn(256, 256)
    want = delta.reshape(64, 256) @ x

    def kept(w):  # the share of the delta's effect on the outputs that survives: regression of got on want
        got = (w - base).reshape(64, 256) @ x
        return float((got * want).sum() / (want * want).sum())

    assert kept(asym) < 0.3 and 0.6 < kept(sym) < 1.4, (kept(asym), kept(sym))
