"""memlora-profile: workloads from LoCoMo, device profiles, roofline arithmetic, adb command construction and result
parsing (against ExecuTorch's real PyTorchObserver line), report statistics, and one end-to-end host profile of a
tiny separate-adapter bundle run by the real ExecuTorch runtime."""

from __future__ import annotations

import json
import shlex
import statistics
from pathlib import Path

import numpy as np
import pytest

from runtimes.profiler import ProfileError, adb, devices, report, roofline, workloads
from runtimes.profiler.cli import main as profile_main

DATA = Path(__file__).parent / "data"
TEMPLATES = {"extract": "memlora.extract.v1", "update": "memlora.update.v1", "generate": "memlora.generate.v1"}


# ------------------------------------------------------------------------------------------------ workloads
@pytest.fixture(scope="module")
def locomo():
    if workloads.default_data_path() is None:
        pytest.skip("../shared/data/locomo_dev.json not present")
    return workloads.load_locomo(None)


def test_workloads_are_locomo_shaped(locomo):
    items = workloads.build(locomo, TEMPLATES, samples=3, k=4, window=5, seed=1)
    assert {op: len(v) for op, v in items.items()} == {"extract": 3, "update": 3, "generate": 3}
    for it in items["extract"]:
        conv = locomo[int(it.sample_id.split("-")[0][4:])]["conversation"]
        session = it.sample_id.split("-")[1][1:]
        user = it.messages[1]["content"]
        assert it.meta["turns"] == 5
        assert conv[f"session_{session}_date_time"] in user  # the session date is in the prompt
        assert sum(1 for t in conv[f"session_{session}"] if f"{t['speaker']}: " in user) >= 1
        assert json.loads(it.reference_output)["facts"]  # the annotators' facts for these turns
    for it in items["update"]:
        user = it.messages[1]["content"]
        mem_block = user.split("Stored memories:\n")[1].split("\nNew facts:")[0].splitlines()
        assert [line.split(":")[0] for line in mem_block] == ["0", "1", "2", "3"]  # k = 4 temporary ids
        ref = json.loads(it.reference_output)["memory"]
        assert len(ref) == 4 + it.meta["facts"] and {e["event"] for e in ref} == {"NONE", "ADD"}
    for it in items["generate"]:
        assert "Question: " in it.messages[1]["content"] and it.meta["memories"] == 4
    again = workloads.build(locomo, TEMPLATES, samples=3, k=4, window=5, seed=1)
    other = workloads.build(locomo, TEMPLATES, samples=3, k=4, window=5, seed=2)
    assert [i.messages for i in again["update"]] == [i.messages for i in items["update"]]
    assert [i.sample_id for i in other["generate"]] != [i.sample_id for i in items["generate"]]


def test_fixed_new_tokens_is_the_median_reference_length(locomo):
    items = workloads.build(locomo, TEMPLATES, samples=5, seed=0)["update"]
    count = lambda s: len(s.split())  # noqa: E731
    assert workloads.fixed_new_tokens(items, count) == round(statistics.median(count(i.reference_output) for i in items))


def test_bad_data_and_template_are_clear_errors(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"not": "locomo"}')
    with pytest.raises(ProfileError, match="expected a non-empty list of LoCoMo samples"):
        workloads.load_locomo(bad)
    with pytest.raises(ProfileError, match="not found"):
        workloads.load_locomo(tmp_path / "missing.json")
    with pytest.raises(ProfileError, match="not one of the memory templates"):
        workloads.kind_of("memlora.summarize.v1")


# ------------------------------------------------------------------------------------------------ devices
def test_device_profiles_cover_three_tiers_with_sources():
    assert set(devices.TIERS) == {"flagship", "mid-range", "low-end"}
    doc = devices.__doc__
    for p in devices.PROFILES.values():
        assert devices.get(p.tier) is p
        for fig in (p.ram_gb, p.mem_bandwidth_gbs):
            assert fig.basis in ("spec", "derived", "assumed") and fig.value > 0
        for key in p.sources:
            assert f"[{key}]" in doc  # every cited source is listed in the module docstring
        assert 1 <= p.threads <= len(p.big_cores)
    low = devices.get("low-end")  # 2 x Cortex-A75 at 2.0 GHz, 32 int8 ops/cycle each
    assert low.peak_int8_gops.value == pytest.approx(2 * 2.0 * 32)
    with pytest.raises(ProfileError, match="unknown device profile 'iphone'"):
        devices.get("iphone")


# ------------------------------------------------------------------------------------------------ roofline
class _M:  # the two manifest attributes model_cost reads
    def __init__(self, raw):
        from runtimes.manifest import OpEntry

        self.raw = raw
        self.ops = {"generate": OpEntry("generate", "p.pte", ["f.ptd"], "memlora.generate.v1", {}, [])}


def test_roofline_arithmetic():
    raw = {"model": {"name": "smollm2-135m", "dim": 576, "n_layers": 30, "vocab_size": 49152, "max_seq_len": 1024},
           "quantization": {"scheme": "int4"}, "files": {"p.pte": {"bytes": 10_000_000}, "f.ptd": {"bytes": 90_000_000}}}
    cost = roofline.model_cost(_M(raw), "generate")
    assert cost.dims_source == "known:smollm2-135m" and cost.kv_dim == 3 * 64 and cost.q_dim == 9 * 64
    assert cost.weight_bytes == 100_000_000 - 49152 * 576  # the int8 embedding table is gathered, not streamed
    assert cost.layer_params == 30 * (576 * 576 + 2 * 576 * 192 + 576 * 576 + 3 * 576 * 1536)
    p = roofline.project(cost, prompt_tokens=300, new_tokens=21, bandwidth_gbs=10.0, peak_gops=100.0)
    per_tok = cost.weight_bytes + 2 * 30 * 192 * 4 * (300 + 10.5)
    assert p["decode_bytes_per_token"] == pytest.approx(per_tok)
    assert p["decode_tok_s"] == pytest.approx(10e9 / per_tok)
    ops = 2 * cost.layer_params * 300 + 2 * cost.head_params + 4 * 30 * 576 * 300 * 301 / 2
    assert p["prefill_tok_s"] == pytest.approx(300 / max(ops / 100e9, cost.weight_bytes / 10e9))
    assert p["prefill_bound"] == "compute"
    raw["model"].update(n_heads=4, n_kv_heads=4, head_dim=144, hidden_dim=1000)  # manifest dims win
    assert roofline.model_cost(_M(raw), "generate").kv_dim == 576


# ------------------------------------------------------------------------------------------------ adb
# `adb devices -l` as documented at https://developer.android.com/tools/adb#devicestatus
ADB_DEVICES = """List of devices attached
emulator-5556 device product:sdk_google_phone_x86_64 model:Android_SDK_built_for_x86_64 device:generic_x86_64
0a388e93      unauthorized usb:1-1
HT4CTJT00012  device usb:1-2 product:shiba model:Pixel_8 device:shiba transport_id:3
"""


def test_parse_devices_and_choose():
    devs = adb.parse_devices(ADB_DEVICES)
    assert [(d.serial, d.state) for d in devs] == [("emulator-5556", "device"), ("0a388e93", "unauthorized"),
                                                   ("HT4CTJT00012", "device")]
    assert devs[2].props["model"] == "Pixel_8" and devs[2].props["transport_id"] == "3"
    assert adb.choose(devs, "HT4CTJT00012").props["device"] == "shiba"
    with pytest.raises(ProfileError, match="2 devices attached"):
        adb.choose(devs, None)
    with pytest.raises(ProfileError, match="accept the USB debugging prompt"):
        adb.choose(devs, "0a388e93")
    with pytest.raises(ProfileError, match="no Android device attached"):
        adb.choose(adb.parse_devices("List of devices attached\n\n"), None)


def test_adb_command_construction(tmp_path):
    cmds = adb.push_cmds("adb", "S1", tmp_path, ["base.pte", "tokenizer.json"])
    assert cmds[0] == ["adb", "-s", "S1", "shell", "mkdir -p /data/local/tmp/memlora"]
    assert cmds[1] == ["adb", "-s", "S1", "push", str(tmp_path / "base.pte"), "/data/local/tmp/memlora/base.pte"]
    assert cmds[-1][-1] == "/data/local/tmp/memlora/manifest.json" and len(cmds) == 4
    assert adb.app_result_path() == "/sdcard/Android/data/org.memlora.demo/files/profile_result.json"
    assert adb.app_cmd("adb", "S1", "/d/job.json", "/d/out.json") == [
        "adb", "-s", "S1", "shell", "am", "start", "-W", "-n", "org.memlora.demo/.BenchmarkActivity",
        "--es", "bundle", "/data/local/tmp/memlora", "--es", "job", "/d/job.json", "--es", "out", "/d/out.json"]
    prompt = "<|im_start|>user\nIt's \"Caroline's\" $HOME `date`<|im_end|>\n"
    cmd = adb.runner_cmd("adb", "S1", "./llama_main", "extract.pte", "tokenizer.json", prompt, 400, 4, "foundation.ptd")
    assert cmd[:4] == ["adb", "-s", "S1", "shell"] and len(cmd) == 5
    remote = shlex.split(cmd[4])  # what the phone's shell sees
    assert remote[:4] == ["cd", "/data/local/tmp/memlora", "&&", "./llama_main"]
    assert remote[4:] == ["--model_path=extract.pte", "--tokenizer_path=tokenizer.json", f"--prompt={prompt}",
                          "--seq_len=400", "--cpu_threads=4", "--temperature=0", "--data_path=foundation.ptd"]
    two = shlex.split(adb.runner_cmd("adb", "S1", "./llama_main", "model.pte", "tokenizer.json", "hi", 64, 4,
                                     ["foundation.ptd", "extract.lora.ptd"])[4])
    assert two[-1] == "--data_paths=foundation.ptd,extract.lora.ptd"


def test_parse_pytorch_observer_line():
    # Recorded from ExecuTorch 1.5.1's LLM runner (extension/llm/runner/stats.h print_report); provenance in
    # tests/data/README.md.
    text = (DATA / "pytorch_observer_executorch_1.5.1.txt").read_text()
    raw = json.loads([line for line in text.splitlines() if line.startswith("PyTorchObserver ")][-1].split(" ", 1)[1])
    r = adb.parse_observer(text)
    assert r["prompt_tokens"] == raw["prompt_tokens"] == 23 and r["new_tokens"] == raw["generated_tokens"] + 1 == 12
    assert r["prefill_ms"] == raw["prompt_eval_end_ms"] - raw["inference_start_ms"]
    assert r["decode_ms"] == raw["inference_end_ms"] - raw["prompt_eval_end_ms"]
    assert r["ttft_ms"] == raw["first_token_ms"] - raw["inference_start_ms"]
    assert r["load_ms"] == raw["model_load_end_ms"] - raw["model_load_start_ms"]
    assert r["e2e_ms"] == pytest.approx(r["prefill_ms"] + r["decode_ms"])
    # the same rates the runner itself reported
    assert r["prefill_tok_s"] == pytest.approx(raw["prefill_token_per_sec"], rel=1e-3)
    assert r["decode_tok_s"] == pytest.approx(raw["decode_token_per_sec"], rel=1e-3)
    with pytest.raises(ProfileError, match="no 'PyTorchObserver"):
        adb.parse_observer("I 00:00:01 Prompt Tokens: 12\n")


def test_parse_device_result():
    run = {"sample_id": "a", "prompt_tokens": 200, "new_tokens": 11, "ttft_ms": 110.0, "prefill_ms": 100.0,
           "decode_ms": 500.0, "e2e_ms": 600.0}
    d = adb.parse_device_result(json.dumps({"schema": "memlora.profile.device", "schema_version": 1,
                                            "ops": {"generate": {"load_ms": 80.0, "runs": [run]}}}))
    r = d["ops"]["generate"]["runs"][0]
    assert r["prefill_tok_s"] == pytest.approx(2000.0) and r["decode_tok_s"] == pytest.approx(20.0)
    with pytest.raises(ProfileError, match="not memlora.profile.device v1"):
        adb.parse_device_result('{"schema": "other"}')
    with pytest.raises(ProfileError, match="lacks"):
        adb.parse_device_result(json.dumps({"schema": "memlora.profile.device", "schema_version": 1,
                                            "ops": {"x": {"runs": [{"prompt_tokens": 1}]}}}))


def test_adb_mode_without_adb_or_device_fails_clearly(tmp_path, capsys, monkeypatch):
    (tmp_path / "b").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    monkeypatch.delenv("ADB", raising=False)
    assert profile_main([str(tmp_path / "b"), "--target", "adb", "--report", str(tmp_path / "r"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("memlora-profile: error: adb not found")
    # An adb that lists no device (platform-tools with nothing plugged in): a clear message, no report.
    fake = tmp_path / "adb"
    fake.write_text("#!/bin/sh\nprintf 'List of devices attached\\n\\n'\n")
    fake.chmod(0o755)
    assert profile_main([str(tmp_path / "b"), "--target", "adb", "--adb", str(fake), "--report",
                         str(tmp_path / "r"), "--quiet"]) == 1
    assert "no Android device attached" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_cli_rejects_bad_target_and_options(tmp_path, capsys):
    for args, msg in ((["--target", "phone"], "--target must be"), (["--target", "host:iphone"], "unknown device"),
                      (["--repeats", "0"], "--repeats must be >= 1"), (["--new-tokens", "extract=x"], "OP=N")):
        assert profile_main([str(tmp_path), "--report", str(tmp_path / "r"), "--quiet", *args]) == 1
        assert msg in capsys.readouterr().err
    assert profile_main([str(tmp_path / "nobundle"), "--report", str(tmp_path / "r"), "--quiet"]) == 1
    assert "not a memlora bundle" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ statistics
def test_summary_statistics_match_numpy():
    rng = np.random.default_rng(0)
    v = list(rng.gamma(2.0, 10.0, size=37))
    s = report.summarize(v)
    assert s["median"] == pytest.approx(np.median(v)) and s["p90"] == pytest.approx(np.percentile(v, 90))
    assert s["p10"] == pytest.approx(np.percentile(v, 10)) and s["n"] == 37
    assert s["cv"] == pytest.approx(np.std(v, ddof=1) / np.mean(v))
    assert report.agreement([100.0, 109.0])["within_10pct"] is True
    bad = report.agreement([100.0, 112.0])
    assert bad["within_10pct"] is False and bad["max_rel_diff"] == pytest.approx(0.12)
    assert report.agreement([100.0])["within_10pct"] is None


# ------------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def separate_bundle(tmp_path_factory, tiny_llama, llama_adapters, locomo):
    from exporter.pipeline import run
    from exporter.spec import AdapterSpec, ExportSpec, FidelitySpec, ModelSpec, OutputSpec, QuantSpec

    out = tmp_path_factory.mktemp("prof") / "sep"
    ads = {op: str(p) for op, p in llama_adapters.items() if op in ("extract", "generate")}
    run(ExportSpec(target="host", model=ModelSpec(base=str(tiny_llama), max_seq_len=768), quant=QuantSpec("fp32"),
                   adapters=AdapterSpec(paths=ads, strategy="separate"), output=OutputSpec(str(out)),
                   fidelity=FidelitySpec(enabled=False)))
    return out


def test_host_profile_end_to_end(separate_bundle, tmp_path, capsys):
    out = tmp_path / "report"
    rc = profile_main([str(separate_bundle), "--target", "host:low-end", "--report", str(out), "--samples", "2",
                       "--repeats", "1", "--warmup", "0", "--rounds", "2", "--new-tokens", "extract=5",
                       "generate=3", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    r = json.loads((out / "report.json").read_text())
    assert r["schema"] == report.SCHEMA and r["schema_version"] == report.SCHEMA_VERSION
    assert r["target"] == {"kind": "host", "profile": "redmi-12c", "serial": None, "device": r["target"]["device"]}
    assert r["host"]["threads"] == min(2, r["host"]["cpu_count"]) and r["host"]["bandwidth_gbs"] > 0
    assert list(r["ops"]) == ["extract", "generate"] and summary["ops"].keys() == r["ops"].keys()
    manifest = json.loads((separate_bundle / "manifest.json").read_text())
    for op, fixed in (("extract", 5), ("generate", 3)):
        o = r["ops"][op]
        assert len(o["runs"]) == 2 * 2 and {x["round"] for x in o["runs"]} == {0, 1}
        assert all(x["new_tokens"] == fixed for x in o["runs"])  # stop tokens ignored: exactly the fixed length
        assert {x["prompt_tokens"] for x in o["runs"]} == {w["prompt_tokens"] for w in o["workload"]}
        assert all(x["e2e_ms"] >= x["ttft_ms"] > 0 and x["decode_tok_s"] > 0 for x in o["runs"])
        assert o["summary"]["e2e_ms"]["median"] == pytest.approx(np.median([x["e2e_ms"] for x in o["runs"]]))
        assert o["load_ms"]["median"] > 0 and o["rss_mb"]["peak"] > o["rss_mb"]["interpreter"] > 0
        need = ["model.pte", "foundation.ptd", f"{op}.lora.ptd", "tokenizer.json"]
        assert o["bytes_on_disk"] == sum(manifest["files"][f]["bytes"] for f in need)
        assert set(o["agreement"]) == {"e2e_ms", "prefill_tok_s", "decode_tok_s"}
        assert 0 < o["roofline_host"]["decode_fraction"]
    cyc = r["cycle"]
    assert cyc["total_ms"]["n"] == 1 and cyc["total_ms"]["median"] >= sum(v["median"] for v in cyc["ops_ms"].values())
    assert {(s["from"], s["to"]) for s in cyc["switch"]} == {("extract", "generate"), ("generate", "extract")}
    assert all(s["cold_load_ms"] > 0 for s in cyc["switch"])
    for op, b in r["breakdown"].items():  # real ETDump events from the ExecuTorch runtime
        assert b["execute_ms"] > 0 and b["delegate_ms"] > 0 and "llama::custom_sdpa.out" in b["kernels_ms"]
        assert b["execute_ms"] <= b["wall_ms"]
    assert set(r["projections"]) == set(devices.PROFILES)
    for p in r["projections"].values():
        assert p["label"] == "PROJECTION" and p["cycle_ms"]["roofline"] > 0
    md = (out / "report.md").read_text()
    assert "PROJECTION" in md and "## Full memory cycle" in md and "redmi-12c" in md
    for png in ("latency.png", "toks_vs_prompt.png", "size.png", "projection.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({png})" in md
