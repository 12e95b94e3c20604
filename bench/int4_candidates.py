"""Issue 16 item 4: int4 recipes for the embedded SmolLM2 + its three adapters, compared without lowering.

    PYTHONPATH=. python bench/int4_candidates.py [asym sym gptq gptq-mse gptq-mse-k12 ...] [--prompts 8]

Each candidate quantizes the fused decoder (`exporter.fuse`) in eager PyTorch with torchao's 8da4w tensors, the
numerics XNNPACK runs, and is teacher-forced on the float reference's greedy tokens (`exporter.validate.summarise`:
answer-token agreement, the export's fidelity figure) for `--prompts` prompts per op drawn from the *validation*
conversations (the export's own fidelity prompts are not used). Calibration (GPTQ) uses 16 prompts per op drawn from
the *training* conversations, each op's adapter on.

- asym: the default, the asymmetric split (`quant.GroupOffsetLinear`): the GGUF's own 4-bit codes;
- sym: plain symmetric int4, HQQ scales (`--int4-weights symmetric`);
- gptq: symmetric int4 codes chosen by GPTQ (Frantar et al. 2022: column by column, the rounding error spread over
  the columns not yet rounded, weighted by the inverse Hessian of the calibration inputs), min-max group scales;
- gptq-mse: the same with each group's scale searched (13 shrink factors, error weighted by the Hessian diagonal);
- ...-act: columns rounded in order of decreasing Hessian diagonal (activation order), on static group scales;
- ...-kN: the N linears with the largest relative GPTQ output error kept on the asymmetric split.

Needs ../shared/data/locomo_dev.json (or --data). Slow: GPTQ in float64 on one core, and eager int4 decode.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

GROUP = 32


def group_scales(g: torch.Tensor, d: torch.Tensor, mse: bool) -> torch.Tensor:
    """Per row, the scale of one group of weights `g` [rows, GROUP]: min-max (-8..7), or with `mse` the best of 13
    shrink factors by squared error weighted by `d` (the Hessian diagonal of those inputs)."""
    s = torch.maximum(g.amax(1) / 7, -g.amin(1) / 8).clamp(min=1e-8)
    if not mse:
        return s
    s0, best = s, None
    for f in torch.linspace(1.0, 0.7, 13, dtype=g.dtype):
        sc = s0 * f
        err = ((g - torch.clamp(torch.round(g / sc[:, None]), -8, 7) * sc[:, None]) ** 2 * d).sum(1)
        better = err < best if best is not None else torch.ones_like(err, dtype=torch.bool)
        best = err if best is None else torch.where(better, err, best)
        s = torch.where(better, sc, s)
    return s


def gptq(w: torch.Tensor, h: torch.Tensor, mse: bool, act_order: bool = False, damp: float = 0.01, block: int = 128):
    """Symmetric int4 codes for `w` [out, in] in groups of GROUP inputs. Returns (dequantized weight, scales).
    `act_order`: columns rounded in order of decreasing Hessian diagonal, on scales fixed beforehand from the
    weights themselves ("static groups"), so each group's codes still share one scale."""
    w = w.clone().double()
    rows, cols = w.shape
    h = h.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h += damp * torch.mean(torch.diag(h)) * torch.eye(cols, dtype=h.dtype)
    diag = torch.diag(h)
    scales = torch.zeros(rows, cols // GROUP, dtype=w.dtype)
    if act_order:
        for c in range(0, cols, GROUP):
            scales[:, c // GROUP] = group_scales(w[:, c:c + GROUP], diag[c:c + GROUP], mse)
        perm = torch.argsort(diag, descending=True)
    else:
        perm = torch.arange(cols)
    w, h = w[:, perm], h[perm][:, perm]
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q_w = torch.zeros_like(w)
    for i1 in range(0, cols, block):  # block is a multiple of GROUP: without act_order a group never spans two blocks
        i2 = min(i1 + block, cols)
        wb, eb, hb = w[:, i1:i2].clone(), torch.zeros(rows, i2 - i1, dtype=w.dtype), hinv[i1:i2, i1:i2]
        for j in range(i2 - i1):
            c = i1 + j
            if act_order:
                s = scales[:, int(perm[c]) // GROUP]
            elif c % GROUP == 0:
                s = group_scales(wb[:, j:j + GROUP], diag[c:c + GROUP], mse)
                scales[:, c // GROUP] = s
            col = wb[:, j]
            q = torch.clamp(torch.round(col / s), -8, 7) * s
            q_w[:, c] = q
            e = (col - q) / hb[j, j]
            wb[:, j:] -= e[:, None] * hb[j, j:][None, :]
            eb[:, j] = e
        w[:, i2:] -= eb @ hinv[i1:i2, i2:]
    return q_w[:, torch.argsort(perm)].float(), scales.float()


def main() -> int:
    from exporter import quant as Q
    from exporter.adapters import with_adapter
    from exporter.arch import ArchConfig, build_decoder
    from exporter.fuse import fuse_projections
    from exporter.load import embedded_adapters, load_adapter, load_base
    from exporter.pipeline import reference_for, stop_token_ids
    from exporter.spec import QuantSpec
    from exporter.train import data as D
    from exporter.train.trainer import encode, end_of_turn
    from exporter.validate import summarise
    from torchao.quantization.granularity import PerGroup
    from torchao.quantization.quant_api import (Int8DynamicActivationIntxWeightConfig,
                                                _int8_dynamic_activation_intx_weight_quantize_tensor, quantize_)

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("candidates", nargs="*", default=["asym", "sym", "gptq", "gptq-mse"])
    p.add_argument("--prompts", type=int, default=8, help="validation prompts per op")
    p.add_argument("--tokens", type=int, default=48)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "locomo_dev.json"))
    a = p.parse_args()

    base = load_base("smollm2-135m")
    tok = base.tokenizer
    base_dec = build_decoder(ArchConfig.from_hf(base.config, 2048), base.model.state_dict())
    adapters = {op: load_adapter(op, path) for op, path in embedded_adapters("smollm2-135m").items()}
    stops = set(stop_token_ids(tok, base.config))
    eot = end_of_turn(tok, sorted(stops))

    def sample(op: str, split: str, n: int, seed: int):
        ex = D.build(op, split, a.data, cache_dir=Path.home() / ".cache" / "memlora" / "train-data")
        return [encode(tok, ex[i], eot) for i in random.Random(seed).sample(range(len(ex)), n)]

    def prompt_ids(enc) -> list[int]:
        return enc.ids[:next(i for i, x in enumerate(enc.labels) if x != -100)]

    work = {op: ([prompt_ids(e) for e in sample(op, "val", a.prompts, 1)], a.tokens) for op in adapters}
    calib = {op: sample(op, "train", 16, 2) for op in adapters}
    ref = reference_for(base.model, adapters, work)  # PEFT wraps base.model: base_dec holds its own copy

    def reset(dec):
        for m in dec.modules():
            if hasattr(m, "k_cache"):
                m.k_cache.zero_()
                m.v_cache.zero_()

    @torch.no_grad()
    def agreement(dec, op: str) -> dict:
        ids_list, n = work[op]
        pairs = []
        for ids, (ref_tokens, ref_logits) in zip(ids_list, ref[op]):
            reset(dec)
            got = [dec(torch.tensor([ids]), torch.tensor([0]))[0]]
            got += [dec(torch.tensor([[int(ref_tokens[i])]]), torch.tensor([len(ids) + i]))[0] for i in range(n - 1)]
            pairs.append((ref_logits, torch.stack(got).reshape(n, -1).float().numpy()))
        return summarise(pairs, stops, n)

    def float_dec(op: str):
        dec = with_adapter(base_dec, adapters[op], "separate")
        fuse_projections(dec)
        return dec

    def int4_linears(dec) -> list[str]:
        return [f for f, m in dec.named_modules()
                if isinstance(m, nn.Linear) and Q.rule_for("int4", f) == "8da4w" and m.in_features % GROUP == 0]

    @torch.no_grad()
    def hessians() -> dict[str, torch.Tensor]:
        hs: dict[str, torch.Tensor] = {}
        for op in adapters:
            dec = float_dec(op)
            hooks = []
            for f in int4_linears(dec):
                def hook(mod, inp, out, f=f):
                    x = inp[0].reshape(-1, inp[0].shape[-1]).double()
                    hs[f] = hs.get(f, 0) + x.T @ x
                hooks.append(dec.get_submodule(f).register_forward_hook(hook))
            for e in calib[op]:
                reset(dec)
                dec(torch.tensor([e.ids]), torch.tensor([0]))
            for hk in hooks:
                hk.remove()
        return hs

    fitted: dict[tuple[bool, bool], tuple[dict, list[str]]] = {}

    def fit(mse: bool, act_order: bool):
        if (mse, act_order) not in fitted:
            t0 = time.perf_counter()
            hs, ref_dec, codes, rel = hessians(), float_dec("extract"), {}, {}
            for f, h in hs.items():
                w = ref_dec.get_submodule(f).weight.detach()
                codes[f] = gptq(w, h, mse, act_order)
                d = w.double() - codes[f][0].double()
                rel[f] = float(torch.trace(d @ h @ d.T) / torch.trace(w.double() @ h @ w.double().T))
            fitted[mse, act_order] = (codes, sorted(rel, key=rel.get, reverse=True))
            print(f"# GPTQ{' + scale search' if mse else ''}{' + act order' if act_order else ''}: "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
        return fitted[mse, act_order]

    def build(op: str, cand: str):
        dec = float_dec(op)
        if cand in ("asym", "sym"):
            Q.quantize(dec, QuantSpec(int4_weights="asymmetric" if cand == "asym" else "symmetric"))
            return dec
        if not cand.startswith("gptq"):
            raise SystemExit(f"unknown candidate {cand!r}")
        codes, ranked = fit("mse" in cand, "act" in cand)
        keep = set(ranked[:int(cand.rsplit("-k", 1)[1]) if "-k" in cand else 0])
        cfg = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(GROUP),
                                                    intx_choose_qparams_algorithm=None)
        linears = set(int4_linears(dec))
        for f in linears - keep:
            w, s = codes[f]
            t, _ = _int8_dynamic_activation_intx_weight_quantize_tensor(
                w, None, cfg, custom_scale=s, custom_zero_point=torch.zeros_like(s, dtype=torch.int8))
            dec.get_submodule(f).weight = nn.Parameter(t, requires_grad=False)
        for f in keep:
            parent, _, child = f.rpartition(".")
            setattr(dec.get_submodule(parent), child, Q.GroupOffsetLinear(dec.get_submodule(f), GROUP))
            quantize_(dec, Q._config("8da4w_exact", GROUP), filter_fn=lambda m, fqn, f=f: fqn == f + ".main")
        for f, m in list(dec.named_modules()):  # the 8-bit head and embedding, as the default scheme has them
            kind = Q.rule_for("int4", f)
            if f not in linears and f not in keep and kind in ("8da8w", "emb8") and isinstance(m, (nn.Linear, nn.Embedding)):
                quantize_(dec, Q._config(kind, GROUP), filter_fn=lambda mm, fqn, f=f: fqn == f)
        return dec

    print(f"# answer-token agreement with the float reference, {a.prompts} validation prompts per op, "
          f"{a.tokens} tokens teacher-forced")
    for cand in a.candidates:
        row = {op: agreement(build(op, cand), op) for op in adapters}
        print(json.dumps({"candidate": cand, **{op: [r["token_agreement"], r["answer_tokens"]] for op, r in row.items()}}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
