"""`memlora-export`: a thin CLI over `ExportSpec` + `pipeline.run`. Results on stdout, logs/progress on stderr."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from runtimes.clikit import Parser, quiet_startup, run_main
from runtimes.outdir import OutputError as _OutputError

from .errors import MemloraError, SpecError
from .spec import (AdapterSpec, EmbedderSpec, ExportSpec, FidelitySpec, ModelSpec, OutputSpec, QuantSpec, VisionSpec,
                   choices, default)

PROG = "memlora-export"
# The one default the CLI does not take from the spec: OutputSpec.path is "bundle" for the Python API, while
# memlora-export has always written ./memlora_bundle (README, docs, the demo app's push step). Kept as is (issue #15).


def parse_adapters(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        op, sep, path = item.partition("=")
        if not sep or not op or not path:
            raise SpecError(f"--adapter expects OP=DIR (e.g. extract=adapters/extract), got {item!r}")
        if op in out:
            raise SpecError(f"--adapter {op!r} given twice")
        out[op] = path
    return out


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Export a small LM + its MemLoRA adapters to a phone-ready bundle.")
    # Choices and defaults come from the spec (exporter/spec.py): its Literal types and dataclass defaults.
    p.add_argument("--target", default=default(ExportSpec, "target"), choices=choices(ExportSpec, "target"),
                   help="where the bundle will run")
    p.add_argument("--base", default=default(ModelSpec, "base"),
                   help="embedded model name (smollm2-135m, gemma3-270m), a Hugging Face directory or a .gguf file")
    p.add_argument("--adapter", action="append", default=[], metavar="OP=DIR",
                   help="PEFT LoRA directory for a memory operation (repeat per op)")
    p.add_argument("--adapters", dest="strategy", choices=choices(AdapterSpec, "strategy"),
                   default=default(AdapterSpec, "strategy"),
                   help="merged | separate (shared foundation .ptd) | none; default: separate with adapters, else none. "
                        "--target android on an embedded base without --adapter uses its trained adapters")
    p.add_argument("--format", default=default(ExportSpec, "format"), choices=choices(ExportSpec, "format"),
                   help="executorch (.pte/.ptd) | onnx (ONNX Runtime GenAI graphs) | both, in one bundle")
    p.add_argument("--quant", default=default(QuantSpec, "scheme"), choices=choices(QuantSpec, "scheme"))
    p.add_argument("--group-size", type=int, default=default(QuantSpec, "group_size"), help="int4 weight group size")
    p.add_argument("--int4-weights", default=default(QuantSpec, "int4_weights"),
                   choices=choices(QuantSpec, "int4_weights"),
                   help="int4 linears: asymmetric 4-bit codes as symmetric int4 + a per-group offset (default; "
                        "exact for Q4_1 GGUF weights) or the backend's plain symmetric int4 (faster decode)")
    p.add_argument("--accuracy-level", type=int, default=default(QuantSpec, "accuracy_level"),
                   choices=choices(QuantSpec, "accuracy_level"),
                   help="ONNX MatMulNBits activations: 4 = int8 (fast), 1 = fp32")
    p.add_argument("--lm-head-bits", type=int, default=default(QuantSpec, "lm_head_bits"),
                   choices=choices(QuantSpec, "lm_head_bits"),
                   help="ONNX int4: LM head + tied embedding at 8 bits (default; exact for a Q8_0 GGUF head) or the "
                        "builder's 4 bits (smaller, ~5%% faster decode)")
    p.add_argument("--lora-dtype", default=default(QuantSpec, "lora_dtype"), choices=choices(QuantSpec, "lora_dtype"),
                   help="ONNX separate: LoRA weights in the adapter files as fp32 (default) or fp16 (cast to fp32 "
                        "in the graph, no zero blocks: about 1/3 the bytes; 6-11%% slower decode on x86)")
    p.add_argument("--max-seq-len", type=int, default=default(ModelSpec, "max_seq_len"),
                   help="KV-cache length (prompt + generated tokens)")
    p.add_argument("--out", default=default(OutputSpec, "path"), help="bundle directory to create")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.add_argument("--skip-fidelity", action="store_true", help="skip the exported-vs-reference check")
    p.add_argument("--fidelity-tokens", type=int, default=default(FidelitySpec, "tokens"))
    p.add_argument("--strict-fidelity", action="store_true", help="fail (no bundle) when fidelity misses its target")
    p.add_argument("--embedder", action=argparse.BooleanOptionalAction, default=default(EmbedderSpec, "enabled"),
                   help="bundle the retrieval embedder (all-MiniLM-L6-v2 embedder.pte + tokenizer); "
                        "default: on for --target android")
    p.add_argument("--embedder-quant", default=default(EmbedderSpec, "quant"), choices=choices(EmbedderSpec, "quant"))
    p.add_argument("--vision", nargs="?", const="embedded", default=None, metavar="DIR",
                   help="add MemLoRA-V's vision op (vision.pte + vqa.lora.ptd over the same foundation.ptd): the one "
                        "shipped for the embedded base (or, when --base is a LLaVA-layout VLM directory, that VLM's "
                        "own tower and projector), or a memlora-train --op vqa output DIR")
    p.add_argument("--vision-quant", default=default(VisionSpec, "quant"), choices=choices(VisionSpec, "quant"),
                   help="the vision op's image encoder + projector: int8 (dynamic int8 on the projector and the "
                        "encoder's weight-heavy convolutions, about 10 MiB smaller) or fp32; default: int8, fp32 "
                        "with --quant fp32")
    p.add_argument("--install", action="store_true",
                   help="then adb push the bundle to /data/local/tmp/memlora and adb install the demo app if built")
    p.add_argument("--serial", help="with --install: the adb serial of the phone (default: the only one attached)")
    p.add_argument("--apk", help="with --install: the APK to install (default: android_demo's debug build)")
    p.add_argument("--debug", "--verbose", "-v", dest="debug", action="store_true",
                   help="show library logs and warnings, and tracebacks")
    return p


def adapter_paths(a: argparse.Namespace) -> dict[str, str]:
    """The --adapter OP=DIR items; with none, --target android on an embedded base gets the trained MemLoRA
    adapters shipped for it (exporter.load.embedded_adapters), unless --adapters none."""
    paths = parse_adapters(a.adapter)
    if not paths and a.target == "android" and a.strategy != "none":
        from .load import embedded_adapters

        paths = embedded_adapters(a.base)
    return paths


def spec_from_args(a: argparse.Namespace) -> ExportSpec:
    return ExportSpec(
        model=ModelSpec(base=a.base, max_seq_len=a.max_seq_len),
        adapters=AdapterSpec(paths=adapter_paths(a), strategy=a.strategy),
        quant=QuantSpec(scheme=a.quant, group_size=a.group_size, int4_weights=a.int4_weights,
                        accuracy_level=a.accuracy_level, lm_head_bits=a.lm_head_bits, lora_dtype=a.lora_dtype),
        output=OutputSpec(path=a.out, force=a.force),
        fidelity=FidelitySpec(enabled=not a.skip_fidelity, tokens=a.fidelity_tokens, strict=a.strict_fidelity),
        embedder=EmbedderSpec(enabled=a.embedder, quant=a.embedder_quant),
        vision=VisionSpec(path=a.vision, quant=a.vision_quant),
        target=a.target,
        format=a.format,
    )


def print_summary(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    m = result["manifest"]
    console = Console(file=sys.stdout, width=110)
    files = Table(title=f"bundle {result['bundle']}  ({m['model']['name']}, {m['quantization']['scheme']}, "
                        f"adapters {m['strategy']})", show_lines=False)
    files.add_column("file")
    files.add_column("MiB", justify="right")
    total = 0
    for name, e in sorted(m["files"].items()):
        files.add_row(name, f"{e['bytes'] / 2**20:.2f}")
        total += e["bytes"]
    files.add_row("[b]total", f"[b]{total / 2**20:.2f}")
    console.print(files)
    ops = Table(title="operations")
    # Agreement over the reference's answers (to its stop token) is the target; "forced" counts all N positions.
    for col in ("op", "program", "data", "token agreement", "forced", "max |Δlogit|", "target"):
        ops.add_column(col)
    for op, e in m["ops"].items():
        for b in e.get("backends") or {None: e}:  # one row per format in a multi-format bundle
            be = e["backends"][b] if b else e
            f = be.get("fidelity")
            data = [*be["data_files"], *([be["adapter_file"]] if be.get("adapter_file") else [])]
            ops.add_row(op, be["program"], ",".join(dict.fromkeys(data)) or "-",
                        f"{f['token_agreement']:.1%}" if f else "skipped",
                        f"{f['token_agreement_forced']:.1%}" if f and "token_agreement_forced" in f else "-",
                        f"{f['max_abs_logit_diff']:.3g}" if f else "-",
                        ("met" if f["meets_target"] else "[red]MISSED") if f else "-")
            x = be.get("vs_executorch")
            if x:
                ops.add_row("", "onnx vs executorch", "", f"{x['token_agreement']:.1%}",
                            f"{x['token_agreement_forced']:.1%}" if "token_agreement_forced" in x else "-",
                            f"{x['max_abs_logit_diff']:.3g}", "")
    v = m.get("vision")
    rows = [(v["program"], v["data_files"], v.get("fidelity"))] if v and v.get("program") else []
    if v and v.get("onnx"):
        vo = v["onnx"]
        rows.append((vo["decoder"], [vo["encoder"], *vo["data_files"], vo["adapter_file"]], vo.get("fidelity")))
    for program, data, f in rows:
        ops.add_row(v["op"] + " (image)", program, ",".join(data),
                    f"{f['answer_agreement']:.1%} answers" if f else "skipped", "-", "-",
                    f"accuracy {f['accuracy_exported']:.0%} vs {f['accuracy_reference']:.0%} (PyTorch), "
                    f"{f['samples']} questions" if f else "-")
    console.print(ops)
    console.print(f"export time {m['export']['seconds']['total']:.1f} s  "
                  f"(torch {m['versions'].get('torch')}, executorch {m['versions'].get('executorch')}"
                  + (f", onnxruntime-genai {m['versions'].get('onnxruntime-genai')}" if "backends" in m else "") + ")")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_startup(args.debug, PROG)
    logging.getLogger("memlora").setLevel(logging.DEBUG if args.debug else logging.INFO)
    state: dict[str, Any] = {}

    def export() -> int:
        spec = spec_from_args(args)
        if args.install:  # adb and a phone are checked before minutes of export, not after
            from .install import preflight

            state["device"] = preflight(args.serial)
        from .pipeline import run

        state["result"] = run(spec)
        return 0

    code = run_main(PROG, export, debug=args.debug, user_errors=(MemloraError, _OutputError),
                    interrupted="no bundle was written")
    if code:
        return code
    result = state["result"]
    print_summary(result)
    if state.get("device") is not None:
        from .install import install

        try:
            done = install(state["device"], result["bundle"], args.apk)
        except MemloraError as e:
            print(f"{PROG}: error: {e} (the bundle is at {result['bundle']})", file=sys.stderr)
            return 1
        print(f"installed: bundle -> {done['bundle']}; app: {done['app']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
