"""Re-measure an exported bundle's fidelity against the PyTorch (+ PEFT) reference, without re-exporting.

    PYTHONPATH=. python bench/fidelity.py BUNDLE [--tokens 64] [--out FILE]

Rebuilds the export spec from the bundle's manifest (base model, adapters, quantization), loads the reference and
runs exporter.validate on every backend the bundle has, with the current fixed prompts (runtimes/prompts.py
FIDELITY_SAMPLES). Prints one row per backend and op; the bundle itself is not modified.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    from exporter.load import load_adapter, load_base
    from exporter.pipeline import FORMATS, check_fidelity, fidelity_prompts, reference_for
    from exporter.chatformat import derive
    from exporter.errors import MemloraError
    from exporter.spec import ExportSpec
    from runtimes.manifest import BundleError, load_manifest

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--tokens", type=int, default=None, help="tokens per prompt (default: the export's)")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    a = p.parse_args()
    try:
        m = load_manifest(a.bundle)
        spec = ExportSpec.from_dict(m.raw["spec"])
        if a.tokens:
            spec.fidelity.tokens = a.tokens
        base = load_base(spec.model.base)
        adapters = {op: load_adapter(op, path) for op, path in spec.adapters.paths.items()}
        work = fidelity_prompts(spec, base.tokenizer, m.chat_format or derive(base.tokenizer))
        res = check_fidelity(spec, m, work, reference_for(base.model, adapters, work), backends=FORMATS[spec.format])
    except (BundleError, MemloraError) as e:
        p.error(str(e))
    print(f"{'backend':<12} {'op':<9} {'answer agr.':>11} {'tokens':>6} {'forced agr.':>11} {'max|dlogit|':>11}  target")
    for b, per_op in res.items():
        for op, f in per_op.items():
            print(f"{b:<12} {op:<9} {f['token_agreement']:>11.1%} {f['answer_tokens']:>6} "
                  f"{f['token_agreement_forced']:>11.1%} {f['max_abs_logit_diff']:>11.3g}  "
                  f"{'met' if f.get('meets_target', True) else 'MISSED'}")
    if a.out:
        Path(a.out).write_text(json.dumps({"bundle": a.bundle, "quant": spec.quant.scheme,
                                           "strategy": spec.adapters.strategy, "fidelity": res}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
