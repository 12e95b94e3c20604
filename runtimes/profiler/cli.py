"""`memlora-profile BUNDLE --target host[:PROFILE] | adb[:SERIAL] --report OUT`: latency, memory and size of every
memory operation of a bundle; writes OUT/report.json, OUT/report.md and PNG plots."""

from __future__ import annotations

import json
import sys

from runtimes.clikit import Parser, quiet_startup, run_main
from runtimes.factory import BACKEND_CHOICES, BACKEND_HELP
from runtimes.manifest import BundleError
from runtimes.outdir import OutputError

from . import ProfileError

PROG = "memlora-profile"


def parse_target(text: str) -> tuple[str, str | None]:
    kind, _, arg = text.partition(":")
    if kind not in ("host", "adb"):
        raise ProfileError(f"--target must be host, host:PROFILE, adb or adb:SERIAL, got {text!r}")
    if kind == "host" and arg:
        from . import devices

        devices.get(arg)  # unknown profile -> one clear error before any work
    return kind, arg or None


def parse_new_tokens(items: list[str]) -> dict[str, int]:
    out = {}
    for it in items:
        op, _, n = it.partition("=")
        if not op or not n.isdigit() or int(n) < 1:
            raise ProfileError(f"--new-tokens takes OP=N with N >= 1, got {it!r}")
        out[op] = int(n)
    return out


def main(argv: list[str] | None = None) -> int:
    from . import devices

    p = Parser(prog=PROG, description=__doc__.split("\n")[0].split(": ", 1)[1])
    p.add_argument("bundle", help="bundle directory (manifest.json + programs)")
    p.add_argument("--target", default="host",
                   help=f"host | host:PROFILE (profiles: {', '.join(devices.PROFILES)}; tiers: "
                        f"{', '.join(devices.TIERS)}) | adb | adb:SERIAL")
    p.add_argument("--report", required=True, help="output directory to create for report.json, report.md and plots")
    p.add_argument("--force", action="store_true", help="replace an earlier memlora-profile report at --report")
    p.add_argument("--ops", nargs="+", help="ops to profile (default: every op in the bundle)")
    p.add_argument("--backend", choices=list(BACKEND_CHOICES), default="auto", help=BACKEND_HELP)
    p.add_argument("--threads", type=int, help="override the profile's thread count")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="runs per work item per round")
    p.add_argument("--samples", type=int, default=3, help="LoCoMo work items per op")
    p.add_argument("--rounds", type=int, default=2, help="independent rounds (fresh processes), compared for agreement")
    p.add_argument("--k", type=int, default=5, help="memories shown to update / generate")
    p.add_argument("--window", type=int, default=6, help="turns per extract window")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", help="LoCoMo JSON (default: ../shared/data/locomo_dev.json)")
    p.add_argument("--new-tokens", nargs="+", default=[], metavar="OP=N",
                   help="fixed output length per op (default: median length of the reference outputs)")
    p.add_argument("--no-breakdown", action="store_true", help="skip the ETDump where-the-time-goes run")
    p.add_argument("--no-cycle", action="store_true", help="skip the full memory cycle run")
    p.add_argument("--also", nargs="+", default=[], metavar="BUNDLE",
                   help="other bundles (e.g. other strategies) to show in the size plot (not run)")
    p.add_argument("--baseline", help="an earlier report.json of the same bundle to compare medians with")
    p.add_argument("--runner", help="adb: an ExecuTorch LLM runner binary (llama_main-like) to run instead of the app")
    p.add_argument("--app-package", default="org.memlora.demo", help="adb: the demo app's package")
    p.add_argument("--adb", help="adb executable (default: $ADB or adb on PATH)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", "--verbose", "-v", dest="debug", action="store_true",
                   help="show library logs and warnings, and tracebacks")
    a = p.parse_args(argv)
    quiet_startup(a.debug, PROG)
    state: dict = {}

    def body() -> int:
        from .plan import Settings, size_row
        from .report import compare_with_baseline, output, write

        kind, arg = parse_target(a.target)
        for name in ("warmup", "repeats", "samples", "rounds", "k", "window"):
            lo = 0 if name == "warmup" else 1
            if getattr(a, name) < lo:
                raise ProfileError(f"--{name} must be >= {lo}, got {getattr(a, name)}")
        if a.threads is not None and a.threads < 1:
            raise ProfileError(f"--threads must be >= 1, got {a.threads}")
        s = Settings(warmup=a.warmup, repeats=a.repeats, samples=a.samples, rounds=a.rounds, k=a.k, window=a.window,
                     seed=a.seed, data=a.data, ops=a.ops, new_tokens=parse_new_tokens(a.new_tokens),
                     backend=a.backend, threads=a.threads, breakdown=not a.no_breakdown, cycle=not a.no_cycle)
        od = output(a.report, a.force, inputs=[a.bundle, a.data, a.baseline, *a.also])  # checked before any run
        baseline = None
        if a.baseline:
            try:
                with open(a.baseline) as f:
                    baseline = json.load(f)
            except (OSError, json.JSONDecodeError) as e:
                raise ProfileError(f"--baseline {a.baseline}: {e}") from e
        if kind == "host":
            from .host import profile_host

            report = profile_host(a.bundle, s, arg, progress=not a.quiet)
        else:
            from .adb import profile_adb

            report = profile_adb(a.bundle, s, arg, runner=a.runner, package=a.app_package, adb=a.adb,
                                 progress=not a.quiet)
        if a.also:
            from runtimes.manifest import load_manifest

            report["sizes"] += [size_row(load_manifest(b, verify=False)) for b in a.also]
        if baseline is not None:
            report["baseline"] = compare_with_baseline(report, baseline)
        state["out"] = write(report, od, plots=not a.no_plots)
        state["report"] = report
        return 0

    code = run_main(PROG, body, debug=a.debug, user_errors=(ProfileError, BundleError, ValueError, OutputError),
                    interrupted="no report was written")
    if code:
        return code
    report, out = state["report"], state["out"]
    summary = {op: {"e2e_ms": round(o["summary"]["e2e_ms"]["median"], 1),
                    "prefill_tok_s": round(o["summary"]["prefill_tok_s"]["median"], 1),
                    "decode_tok_s": round(o["summary"]["decode_tok_s"]["median"], 1)} for op, o in report["ops"].items()}
    print(json.dumps({"report": str(out / "report.md"), "ops": summary,
                      "cycle_ms": round(report["cycle"]["total_ms"]["median"], 1) if report.get("cycle") else None,
                      "agree_within_10pct": report["agreement"]["within_10pct"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
