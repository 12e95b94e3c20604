"""`memlora-run BUNDLE --op OP --prompt TEXT`: run one memory operation of a bundle, streaming the answer.
`memlora-run BUNDLE --image FILE --prompt QUESTION`: answer a question about an image with the bundle's vision op."""

from __future__ import annotations

import json
import sys

from .clikit import Parser, quiet_startup, run_main
from .factory import BACKEND_CHOICES, BACKEND_HELP, open_bundle
from .manifest import BundleError

PROG = "memlora-run"


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog=PROG, description="Run one operation of a memlora bundle on this host.")
    p.add_argument("bundle")
    p.add_argument("--op", default="generate")
    p.add_argument("--prompt", required=True, help="user message (rendered with the bundle's chat template)")
    p.add_argument("--image", help="an image file: answer --prompt about it with the bundle's vision op (--vision bundles)")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy (the op's default)")
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the result and stats as JSON instead of streaming")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the size and sha256 check of bundle files (names, fields and paths are still checked)")
    p.add_argument("--backend", choices=list(BACKEND_CHOICES), default="auto", help=BACKEND_HELP)
    p.add_argument("--debug", "--verbose", "-v", dest="debug", action="store_true",
                   help="show library logs and warnings, and tracebacks")
    a = p.parse_args(argv)
    quiet_startup(a.debug, PROG)
    state: dict = {}

    def body() -> int:
        try:  # argv bytes that are not UTF-8 arrive as lone surrogates
            a.prompt.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("--prompt is not valid UTF-8 text") from None

        if a.image is not None:
            import time

            from .manifest import load_manifest
            from .vision import VisionRunner

            t0 = time.perf_counter()
            backend = a.backend if a.backend in ("onnx", "executorch") else None  # auto: what the bundle has
            runner = VisionRunner(load_manifest(a.bundle, verify=not a.no_verify), backend=backend)
            backend = runner.backend
            t1 = time.perf_counter()
            text = runner.answer(a.image, a.prompt, max_new_tokens=a.max_new_tokens)
            t2 = time.perf_counter()
            print(json.dumps({"op": runner.entry["op"], "text": text}) if a.json else text)
            if not a.json:
                print(f"[vision, {backend}] load {1e3 * (t1 - t0):.0f} ms | answer {1e3 * (t2 - t1):.0f} ms",
                      file=sys.stderr)
            return 0
        rt = open_bundle(a.bundle, backend=a.backend, verify=not a.no_verify)
        kw = dict(max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_p=a.top_p, seed=a.seed)
        if a.json:
            g = rt.generate(a.op, prompt=a.prompt, **kw)
            print(json.dumps({"op": g.op, "text": g.text, "stop_reason": g.stop_reason, "stats": g.stats.to_dict()}))
            return 0
        state["g"] = rt.generate(a.op, prompt=a.prompt, on_token=lambda s: print(s, end="", flush=True), **kw)
        return 0

    code = run_main(PROG, body, debug=a.debug, user_errors=(BundleError, ValueError), interrupted="stopped")
    if code or "g" not in state:
        return code
    g = state["g"]
    s = g.stats
    print(f"\n[{g.stop_reason}] load {s.load_ms:.0f} ms | prompt {s.prompt_tokens} tok, prefill {s.prefill_tok_s:.1f} tok/s | "
          f"{len(g.tokens)} new tok, decode {s.decode_tok_s:.1f} tok/s | ttft {s.ttft_ms:.0f} ms"
          + (f" | adapter switch {s.adapter_switch_ms:.2f} ms" if s.adapter_switch_ms else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
