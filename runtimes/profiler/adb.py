"""adb mode: profile a bundle on a real Android phone.

1. `adb devices -l` lists the phones; one in state `device` is chosen (by serial when several are attached).
2. The bundle (every file its manifest lists, and manifest.json) is pushed to /data/local/tmp/memlora.
3. It runs there through either
   - the demo app's benchmark entry point: `am start -W -n <pkg>/.BenchmarkActivity --es bundle <dir> --es job
     <job.json> --es out <result.json>`; the app runs the job (ops, rendered chat messages, fixed new tokens,
     warm-up, repeats, threads) and writes its result in this profiler's schema (`memlora.profile.device` v1, see
     docs/profiler.md), which is pulled back; or
   - a runner binary the user points to (`--runner`), e.g. ExecuTorch's `llama_main` built for Android: one
     invocation per run, its stats read from the `PyTorchObserver {json}` line that ExecuTorch's LLM runner prints
     (extension/llm/runner/stats.h: print_report / stats_to_json_string).
Without adb or without a device this says so in one line and the CLI exits non-zero; nothing is ever simulated.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from . import ProfileError

REMOTE_DIR = "/data/local/tmp/memlora"
DEFAULT_PACKAGE = "org.memlora.demo"
ACTIVITY = ".BenchmarkActivity"
DEVICE_SCHEMA = "memlora.profile.device"
OBSERVER = "PyTorchObserver "


@dataclass
class AdbDevice:
    serial: str
    state: str
    props: dict[str, str] = field(default_factory=dict)


def parse_devices(text: str) -> list[AdbDevice]:
    """Parse `adb devices -l`: after the 'List of devices attached' header, one line per device:
    `SERIAL STATE key:value ...` (e.g. `emulator-5556 device product:sdk_phone64 model:Pixel_8 device:emu64 transport_id:1`)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("List of devices") or line.startswith("*"):
            continue
        parts = line.split()
        if len(parts) < 2:
            continue
        props = dict(p.split(":", 1) for p in parts[2:] if ":" in p)
        out.append(AdbDevice(parts[0], parts[1], props))
    return out


def find_adb(adb: str | None = None) -> str:
    path = adb or os.environ.get("ADB") or shutil.which("adb")
    if not path or not (Path(path).is_file() or shutil.which(path)):
        raise ProfileError("adb not found: install Android platform-tools (apt install adb) or pass --adb PATH")
    return path


def choose(devices: Sequence[AdbDevice], serial: str | None) -> AdbDevice:
    if not devices:
        raise ProfileError("no Android device attached (`adb devices -l` lists none): connect a phone with USB "
                           "debugging on, or profile on the host with --target host:PROFILE")
    if serial:
        match = [d for d in devices if d.serial == serial]
        if not match:
            raise ProfileError(f"device {serial!r} is not attached; attached: {[d.serial for d in devices]}")
        d = match[0]
    else:
        ready = [d for d in devices if d.state == "device"]
        if len(ready) > 1:
            raise ProfileError(f"{len(ready)} devices attached: name one with --target adb:SERIAL "
                               f"({', '.join(d.serial for d in ready)})")
        d = ready[0] if ready else devices[0]
    if d.state != "device":
        raise ProfileError(f"device {d.serial} is {d.state!r} (not ready): "
                           + ("accept the USB debugging prompt on the phone" if d.state == "unauthorized" else
                              "reconnect it"))
    return d


# ------------------------------------------------------------------------------------------------ commands
def adb_cmd(adb: str, serial: str, *args: str) -> list[str]:
    return [adb, "-s", serial, *args]


def push_cmds(adb: str, serial: str, bundle: Path, files: Sequence[str], remote: str = REMOTE_DIR) -> list[list[str]]:
    cmds = [adb_cmd(adb, serial, "shell", f"mkdir -p {shlex.quote(remote)}")]
    for f in [*files, "manifest.json"]:
        cmds.append(adb_cmd(adb, serial, "push", str(bundle / f), f"{remote}/{f}"))
    return cmds


def app_result_path(package: str = DEFAULT_PACKAGE) -> str:
    """Where the demo app's BenchmarkActivity writes its result: its external files dir (Context.getExternalFilesDir)."""
    return f"/sdcard/Android/data/{package}/files/profile_result.json"


def app_cmd(adb: str, serial: str, job_remote: str, out_remote: str, package: str = DEFAULT_PACKAGE,
            remote: str = REMOTE_DIR) -> list[str]:
    return adb_cmd(adb, serial, "shell", "am", "start", "-W", "-n", f"{package}/{ACTIVITY}",
                   "--es", "bundle", remote, "--es", "job", job_remote, "--es", "out", out_remote)


def runner_cmd(adb: str, serial: str, runner_remote: str, model: str, tokenizer: str, prompt: str, seq_len: int,
               threads: int, data: str | list[str] | None = None, remote: str = REMOTE_DIR) -> list[str]:
    """One greedy generation by an ExecuTorch llama_main-style runner (flags of examples/models/llama/main.cpp).
    `adb shell` joins its arguments into one line for the phone's /system/bin/sh, hence one quoted string. Several
    data files (a separate-adapter bundle: foundation + the op's LoRA) go comma-separated in --data_paths."""
    data = [data] if isinstance(data, str) else list(data or [])
    args = [runner_remote, f"--model_path={model}", f"--tokenizer_path={tokenizer}", f"--prompt={prompt}",
            f"--seq_len={seq_len}", f"--cpu_threads={threads}", "--temperature=0"]
    if len(data) == 1:
        args.append(f"--data_path={data[0]}")
    elif data:
        args.append(f"--data_paths={','.join(data)}")
    return adb_cmd(adb, serial, "shell", f"cd {shlex.quote(remote)} && " + " ".join(shlex.quote(a) for a in args))


def getprop_cmd(adb: str, serial: str, prop: str) -> list[str]:
    return adb_cmd(adb, serial, "shell", "getprop", prop)


# ------------------------------------------------------------------------------------------------ parsing
def parse_observer(text: str) -> dict[str, Any]:
    """The last `PyTorchObserver {json}` line of an ExecuTorch LLM runner's output, as one run in this profiler's
    terms. Timestamps are in units of SCALING_FACTOR_UNITS_PER_SECOND (1000: ms). As ExecuTorch's own report
    (stats.h print_report) reads them: prefill = inference_start -> prompt_eval_end, decode = prompt_eval_end ->
    inference_end, and `generated_tokens` counts the tokens of the decode loop, i.e. without the first token, which
    prefill produced (the recorded ExecuTorch 1.5.1 run in tests/data: max_new_tokens 12 -> generated_tokens 11,
    decode_token_per_sec = 11 / decode time). So new_tokens = generated_tokens + 1 and decode tok/s =
    generated_tokens / decode time, the same definitions as runtimes.base.Stats."""
    lines = [line for line in text.splitlines() if OBSERVER in line]
    if not lines:
        raise ProfileError("runner output has no 'PyTorchObserver {...}' stats line (is it an ExecuTorch LLM runner?)")
    try:
        s = json.loads(lines[-1].split(OBSERVER, 1)[1])
    except json.JSONDecodeError as e:
        raise ProfileError(f"unreadable PyTorchObserver line: {e}") from e
    scale = 1000.0 / float(s.get("SCALING_FACTOR_UNITS_PER_SECOND", 1000))
    ms = lambda a, b: (float(s[b]) - float(s[a])) * scale  # noqa: E731
    prompt, gen = int(s["prompt_tokens"]), int(s["generated_tokens"])
    prefill, decode = ms("inference_start_ms", "prompt_eval_end_ms"), ms("prompt_eval_end_ms", "inference_end_ms")
    return {"prompt_tokens": prompt, "new_tokens": gen + 1,
            "load_ms": ms("model_load_start_ms", "model_load_end_ms"),
            "ttft_ms": ms("inference_start_ms", "first_token_ms"),
            "prefill_ms": prefill, "decode_ms": decode,
            "prefill_tok_s": prompt / (prefill / 1e3) if prefill > 0 else 0.0,
            "decode_tok_s": gen / (decode / 1e3) if decode > 0 else 0.0,
            "e2e_ms": ms("inference_start_ms", "inference_end_ms"),
            "sampling_ms": float(s.get("aggregate_sampling_time_ms", 0)) * scale, "raw": s}


def parse_device_result(text: str) -> dict[str, Any]:
    """The demo app's result file: {"schema": "memlora.profile.device", "schema_version": 1, "device": {...},
    "ops": {op: {"load_ms": float, "rss_mb": {"peak": float}, "runs": [run, ...]}}} with runs in the fields of
    report.METRICS plus prompt_tokens / new_tokens / sample_id."""
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProfileError(f"the app's result is not JSON: {e}") from e
    if d.get("schema") != DEVICE_SCHEMA or d.get("schema_version") != 1:
        raise ProfileError(f"the app's result is not {DEVICE_SCHEMA} v1 (schema={d.get('schema')!r}, "
                           f"version={d.get('schema_version')!r})")
    for op, o in d.get("ops", {}).items():
        for r in o.get("runs", []):
            missing = [k for k in ("prompt_tokens", "new_tokens", "ttft_ms", "prefill_ms", "decode_ms", "e2e_ms")
                       if k not in r]
            if missing:
                raise ProfileError(f"the app's result: a {op} run lacks {missing}")
            r.setdefault("prefill_tok_s", r["prompt_tokens"] / (r["prefill_ms"] / 1e3) if r["prefill_ms"] else 0.0)
            r.setdefault("decode_tok_s", (r["new_tokens"] - 1) / (r["decode_ms"] / 1e3)
                         if r["decode_ms"] and r["new_tokens"] > 1 else 0.0)
    return d


# ------------------------------------------------------------------------------------------------ running
def _run(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise ProfileError(f"{' '.join(cmd[:5])} ... failed (exit {p.returncode}): "
                           f"{(p.stderr or p.stdout).strip().splitlines()[-1:] or ''}")
    return p


def profile_adb(bundle: str, settings: Any, serial: str | None, runner: str | None = None,
                package: str = DEFAULT_PACKAGE, adb: str | None = None, progress: bool = True,
                timeout_s: float = 1800) -> dict[str, Any]:
    from tqdm import tqdm

    from .plan import _Tokens, base_report, make_plan, op_section, overall_agreement

    adb = find_adb(adb)
    dev = choose(parse_devices(_run([adb, "devices", "-l"]).stdout), serial)
    bundle = str(Path(bundle).resolve())  # once, links resolved: the files pushed are those the manifest check saw
    plan = make_plan(bundle, settings)  # after the device check: no device -> fail fast
    m = plan.manifest
    props = {k: _run(getprop_cmd(adb, dev.serial, k)).stdout.strip()
             for k in ("ro.product.model", "ro.soc.model", "ro.product.cpu.abi", "ro.build.version.release")}
    report = base_report(plan, {"kind": "adb", "profile": None, "serial": dev.serial,
                                "device": {**dev.props, **props}})
    s = settings
    for cmd in tqdm(push_cmds(adb, dev.serial, Path(bundle), list(m.raw["files"])), desc="push bundle",
                    disable=not progress):
        _run(cmd)
    threads = s.threads if getattr(s, "threads", None) else 4
    if runner:
        rname = Path(runner).name
        _run(adb_cmd(adb, dev.serial, "push", runner, f"{REMOTE_DIR}/{rname}"))
        _run(adb_cmd(adb, dev.serial, "shell", f"chmod 755 {REMOTE_DIR}/{rname}"))
        tok = _Tokens(m)
        report["notes"].append(f"Measured by the runner binary {rname} (one process per run); it stops at the "
                               "model's end-of-sequence token, so new_tokens per run is what it generated.")
        total = s.rounds * sum(s.warmup + s.repeats * len(plan.items[op]) for op in plan.ops)
        bar = tqdm(total=total, desc="on device", unit="run", disable=not progress)
        for op in plan.ops:
            e = m.ops[op]
            rounds = []
            for _ in range(s.rounds):
                runs, loads = [], []
                for rep in range(-s.warmup, s.repeats):
                    for item in (plan.items[op][:1] if rep < 0 else plan.items[op]):
                        prompt = tok.apply_chat_template(item["messages"])
                        cmd = runner_cmd(adb, dev.serial, f"./{rname}", e.program, m.raw["tokenizer"]["file"], prompt,
                                         item["prompt_tokens"] + plan.new_tokens[op], threads,
                                         e.data_files)
                        r = parse_observer(_run(cmd).stdout)
                        bar.update(1)
                        if rep >= 0:
                            r.pop("raw")
                            r["sample_id"] = item["sample_id"]
                            loads.append(r.pop("load_ms"))
                            runs.append(r)
                rounds.append({"runs": runs, "load_ms": loads[0] if loads else None, "rss_mb": {}})
            report["ops"][op] = op_section(plan, op, rounds)
        bar.close()
    else:
        job = {"schema": "memlora.profile.job", "schema_version": 1, "threads": threads, "warmup": s.warmup,
               "repeats": s.repeats, "rounds": s.rounds, "stop_tokens": "ignored",
               "ops": {op: {"new_tokens": plan.new_tokens[op],
                            "items": [{"sample_id": i["sample_id"], "messages": i["messages"]} for i in plan.items[op]]}
                       for op in plan.ops}}
        # The app may not write /data/local/tmp (shell-owned); its own external files dir needs no permission and
        # adb can pull from it.
        job_remote, out_remote = f"{REMOTE_DIR}/profile_job.json", app_result_path(package)
        with tempfile.TemporaryDirectory() as tmp:
            jp = Path(tmp) / "job.json"
            jp.write_text(json.dumps(job))
            _run(adb_cmd(adb, dev.serial, "push", str(jp), job_remote))
            _run(adb_cmd(adb, dev.serial, "shell", f"rm -f {out_remote}"))
            started = _run(app_cmd(adb, dev.serial, job_remote, out_remote, package))
            if "Error" in started.stdout:
                raise ProfileError(f"could not start {package}/{ACTIVITY}: {started.stdout.strip()} "
                                   "(install the demo app, or pass --runner)")
            t0 = time.monotonic()
            while _run(adb_cmd(adb, dev.serial, "shell", f"test -f {out_remote} && echo yes || echo no")
                       ).stdout.strip() != "yes":
                if time.monotonic() - t0 > timeout_s:
                    raise ProfileError(f"the app wrote no result in {timeout_s:.0f} s ({out_remote})")
                time.sleep(2)
            rp = Path(tmp) / "result.json"
            _run(adb_cmd(adb, dev.serial, "pull", out_remote, str(rp)))
            res = parse_device_result(rp.read_text())
        for op in plan.ops:
            o = res["ops"].get(op)
            if not o:
                raise ProfileError(f"the app's result has no {op!r}")
            rounds = o.get("rounds") or [o]
            report["ops"][op] = op_section(plan, op, [{"runs": rd["runs"], "load_ms": rd.get("load_ms"),
                                                       "rss_mb": rd.get("rss_mb", {})} for rd in rounds])
        if res.get("cycle"):
            report["cycle"] = res["cycle"]
        report["target"]["device"].update(res.get("device", {}))
    report["agreement"] = overall_agreement(report)
    return report
