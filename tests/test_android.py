"""The Android side, as far as it can be checked without an SDK or a phone: `memlora-export --install` says what is
missing (adb, a device) before exporting and builds the right adb commands; the app's runtime pins match the
exporter's; the C++ tokenizer inside ExecuTorch's LLM runner (what the app's LlmModule tokenizes with) gives the
Python runtime's token ids for the prompts the app renders; ExecuTorch's LLM runner itself loads a bundle; and the
way the app's ONNX backend (OrtLlm) feeds an ONNX graph, run with plain onnxruntime, gives onnxruntime-genai's tokens.

(The app's shared JVM module is tested by `./build.sh android-test`: javac + JUnit against tests.jvm_vectors.)
"""

from __future__ import annotations

import re
import stat
import tomllib
from pathlib import Path

import pytest

from exporter import cli, install

ROOT = Path(__file__).resolve().parents[1]


def _fake_adb(tmp_path: Path, monkeypatch, devices_output: str) -> Path:
    """An `adb` that prints a recorded `adb devices` answer and logs every other call (no device is simulated:
    the answers are the header-only / state lines real adb prints)."""
    log = tmp_path / "adb.log"
    script = tmp_path / "adb"
    script.write_text("#!/bin/sh\n"
                      f"echo \"$@\" >> {log}\n"
                      "if [ \"$1\" = devices ]; then printf '%s' \"$ADB_DEVICES\"; fi\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("ADB_DEVICES", devices_output)
    return script


@pytest.fixture
def no_adb_env(monkeypatch, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    for k in ("ADB", "ANDROID_HOME", "ANDROID_SDK_ROOT", "ANDROID_SERIAL"):
        monkeypatch.delenv(k, raising=False)
    return tmp_path


def test_install_without_adb_says_so_before_exporting(no_adb_env, capsys):
    out = no_adb_env / "bundle"
    rc = cli.main(["--install", "--skip-fidelity", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "--install needs adb, which was not found" in err and "apt-get install adb" in err
    assert not out.exists()  # nothing was exported


@pytest.mark.parametrize("devices, message", [
    ("List of devices attached\n\n", "found no Android device"),
    ("List of devices attached\nR58M12345\tunauthorized\n\n", "device R58M12345 is unauthorized: accept the USB debugging"),
    ("List of devices attached\nemulator-5554\toffline\n\n", "is offline"),
    ("List of devices attached\nA1\tdevice\nB2\tdevice\n\n", "2 devices attached (A1, B2): choose one with --serial"),
])
def test_install_without_a_usable_device(no_adb_env, monkeypatch, capsys, devices, message):
    monkeypatch.setenv("ADB", str(_fake_adb(no_adb_env, monkeypatch, devices)))
    out = no_adb_env / "bundle"
    rc = cli.main(["--install", "--skip-fidelity", "--out", str(out)])
    assert rc == 1
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_install_pushes_the_bundle_and_the_apk(no_adb_env, monkeypatch):
    adb = _fake_adb(no_adb_env, monkeypatch, "List of devices attached\nR58M12345\tdevice usb:1-1 product:x\n\n")
    monkeypatch.setenv("ADB", str(adb))
    dev = install.preflight(None)
    assert dev.serial == "R58M12345"
    bundle = no_adb_env / "b"
    bundle.mkdir()
    for name in ("manifest.json", "extract.pte", "foundation.ptd"):
        (bundle / name).write_text("x")
    apk = no_adb_env / "app-debug.apk"
    apk.write_text("apk")
    done = install.install(dev, bundle, apk)
    calls = (no_adb_env / "adb.log").read_text().splitlines()
    d = install.DEVICE_DIR
    assert calls == ["devices",
                     f"-s R58M12345 shell rm -rf {d} && mkdir -p {d}",
                     f"-s R58M12345 push {bundle}/extract.pte {d}/extract.pte",
                     f"-s R58M12345 push {bundle}/foundation.ptd {d}/foundation.ptd",
                     f"-s R58M12345 push {bundle}/manifest.json {d}/manifest.json",
                     f"-s R58M12345 install -r {apk}"]
    assert done == {"bundle": f"R58M12345:{d}", "app": install.APP_ID}
    with pytest.raises(install.InstallError, match="not found"):
        install.install(dev, bundle, no_adb_env / "missing.apk")


def test_app_links_the_runtimes_the_exporter_uses():
    """A .pte must run on the ExecuTorch version it was exported with: the app's executorch-android pin is the
    exporter's executorch pin (and the manifest records it; the app refuses others). Same minor for ONNX Runtime."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {m.group(1): m.group(2) for d in deps if (m := re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9.*]+)", d.replace(" ", "")))}
    versions = tomllib.loads((ROOT / "android_demo" / "gradle" / "libs.versions.toml").read_text())["versions"]
    assert versions["executorch"] == pins["executorch"]
    if "onnxruntime" in pins:
        assert re.fullmatch(pins["onnxruntime"].replace(".", r"\.").replace("*", r"\d+"), versions["onnxruntime"])


def test_runner_tokenizer_matches_the_python_runtime(smollm2_dir):
    """LlmModule tokenizes with ExecuTorch's C++ HFTokenizer (pytorch_tokenizers); the Python runtime with HF
    tokenizers. For the chat prompts of the memory ops they must give the same ids, special tokens included."""
    pt = pytest.importorskip("pytorch_tokenizers")
    from tokenizers import Tokenizer

    from runtimes import prompts
    from runtimes.memory.prompts import extract_messages, generate_messages, update_messages

    tok_file = str(Path(smollm2_dir) / "tokenizer.json")
    cpp = pt.CppHFTokenizer()
    cpp.load(tok_file)
    hf = Tokenizer.from_file(tok_file)
    from transformers import AutoTokenizer

    chat = AutoTokenizer.from_pretrained(smollm2_dir)
    turns = [{"speaker": "Caroline", "text": "I went to an LGBTQ support group — it was powerful! 😀"},
             {"speaker": "Melanie", "text": "Naïve café, 12,345 km; «quotes» {braces}"}]
    mems = [{"id": 3, "text": "Caroline lives in Boston", "updated_at": "2023-05-08T13:56:00"}]
    cases = [extract_messages(turns, "1:56 pm on 8 May, 2023"), update_messages(["Caroline moved"], mems)[0],
             generate_messages("Where does Caroline live?", mems),
             *[prompts.render(t, **prompts.SAMPLE_FIELDS[t]) for t in prompts.TEMPLATES]]
    for messages in cases:
        text = chat.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert list(cpp.encode(text, 0, 0)) == hf.encode(text, add_special_tokens=False).ids


def test_executorch_llm_runner_runs_a_bundle_like_the_python_runtime(tmp_path):
    """ExecuTorch's C++ TextLLMRunner (what Android's LlmModule runs) on an exported bundle gives the Python runtime's
    greedy text."""
    from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner

    from runtimes import prompts
    from runtimes.executorch import ExecuTorchRuntime, merge_data_files
    from tests.jvm_vectors import tiny_bundle

    bundle = tiny_bundle()
    rt = ExecuTorchRuntime.from_bundle(bundle)
    for op, e in rt.manifest.ops.items():
        messages = prompts.render(e.prompt_template, **prompts.SAMPLE_FIELDS[e.prompt_template])
        ids = rt.encode(messages)
        n = min(16, rt.manifest.max_seq_len - len(ids) - 1)
        assert n >= 8, f"{op}: the tiny bundle's max_seq_len leaves {n} tokens to decode"
        want = rt.generate(op, messages=messages, max_new_tokens=n)
        # The Python binding maps one data file (the C++ runner and LlmModule take a list): several are merged.
        data = str(bundle / e.data_files[0]) if e.data_files else None
        if len(e.data_files) > 1:
            data = str(tmp_path / f"{op}.ptd")
            merge_data_files([bundle / f for f in e.data_files], Path(data))
        runner = TextLLMRunner(str(bundle / e.program), str(rt.manifest.tokenizer_file), data)
        pieces: list[str] = []
        runner.generate(rt.apply_chat_template(messages), GenerationConfig(echo=False, seq_len=len(ids) + n, temperature=0.0),
                        pieces.append)
        assert "".join(pieces) == want.text


# ------------------------------------------------------------------------------------------ the app's ONNX backend
def _ort_app_feed_greedy(bundle: Path, op: str, entry: dict, prompt: list[int], n: int, stops: set[int]) -> list[int]:
    """The feed android_demo's OrtLlm gives the graph (core GenaiConfig's layout), with the plain onnxruntime API the
    app's onnxruntime-android wraps: input_ids / attention_mask (ones over past + new) / position_ids when present,
    past_key_values.* empty at first and then the previous run's present.*, the op's .onnx_adapter made active with
    LoraAdapter + RunOptions.add_active_adapter (Java: OrtLoraAdapter.create + addActiveLoraAdapter), logits' last row."""
    import json

    import numpy as np
    import onnxruntime as ort

    dec = json.loads((bundle / "genai_config.json").read_text())["model"]["decoder"]
    inputs, outputs = dec["inputs"], dec["outputs"]
    assert set(inputs) <= {"input_ids", "attention_mask", "position_ids", "past_key_names", "past_value_names"}
    layers, kv, hs = dec["num_hidden_layers"], dec["num_key_value_heads"], dec["head_size"]
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(bundle / entry["program"]), so)
    ro = ort.RunOptions()
    if entry.get("adapter_file"):
        adapter = ort.LoraAdapter()
        adapter.Load(str(bundle / entry["adapter_file"]))
        ro.add_active_adapter(adapter)
    names = [o.name for o in sess.get_outputs()]
    past = {inputs[k] % layer: np.zeros((1, kv, 0, hs), np.float32) for layer in range(layers)
            for k in ("past_key_names", "past_value_names")}
    out: list[int] = []
    feed, start = list(prompt), 0
    while len(out) < n:
        feeds = {inputs["input_ids"]: np.asarray([feed], np.int64),
                 inputs["attention_mask"]: np.ones((1, start + len(feed)), np.int64), **past}
        if "position_ids" in inputs:
            feeds[inputs["position_ids"]] = np.arange(start, start + len(feed), dtype=np.int64)[None]
        r = dict(zip(names, sess.run(None, feeds, ro)))
        start += len(feed)
        past = {inputs[k] % layer: r[outputs[p] % layer] for layer in range(layers)
                for k, p in (("past_key_names", "present_key_names"), ("past_value_names", "present_value_names"))}
        assert all(v.shape[2] == start for v in past.values())
        tok = int(np.argmax(r[outputs["logits"]].reshape(-1, r[outputs["logits"]].shape[-1])[-1]))
        if tok in stops:
            break
        out.append(tok)
        feed = [tok]
    return out


@pytest.mark.parametrize("quant", ["fp32", "int4"])
def test_onnx_app_feed_gives_the_python_runtimes_tokens(tmp_path, tiny_llama, llama_adapters, quant):
    """OrtLlm's way of running an ONNX bundle (plain ORT session + KV feedback + per-op LoRA adapter), done here with
    onnxruntime's Python API, decodes exactly the tokens runtimes/onnx.py gets from onnxruntime-genai, for every op of
    a separate-adapter export (one foundation graph, three .onnx_adapter files), fp32 and int4 (MatMulNBits)."""
    from exporter.pipeline import run
    from exporter.spec import AdapterSpec, ExportSpec, FidelitySpec, ModelSpec, OutputSpec, QuantSpec
    from runtimes import prompts
    from runtimes.onnx import OnnxRuntime

    out = tmp_path / "onnx_sep"
    run(ExportSpec(model=ModelSpec(base=str(tiny_llama), max_seq_len=256), quant=QuantSpec(quant), output=OutputSpec(str(out)),
                   adapters=AdapterSpec(paths={k: str(v) for k, v in llama_adapters.items()}, strategy="separate"),
                   fidelity=FidelitySpec(enabled=False), target="host", format="onnx"))
    rt = OnnxRuntime.from_bundle(out)
    for op, e in rt.manifest.ops.items():
        entry = e.backends["onnx"]
        assert entry["adapter_file"] == f"{op}.onnx_adapter"
        messages = prompts.render(e.prompt_template, **prompts.SAMPLE_FIELDS[e.prompt_template])
        want = rt.generate(op, messages=messages, max_new_tokens=12)
        got = _ort_app_feed_greedy(out, op, entry, want.prompt_tokens, 12, set(e.stop_token_ids))
        assert len(got) >= 4 and got == want.tokens, op
    # The adapters matter: without the op's adapter the same feed decodes something else for at least one op.
    plain = {op: _ort_app_feed_greedy(out, op, {"program": e.backends["onnx"]["program"]}, rt.encode(
        prompts.render(e.prompt_template, **prompts.SAMPLE_FIELDS[e.prompt_template])), 12, set(e.stop_token_ids))
        for op, e in rt.manifest.ops.items()}
    assert any(plain[op] != rt.generate(op, messages=prompts.render(e.prompt_template, **prompts.SAMPLE_FIELDS[e.prompt_template]),
                                        max_new_tokens=12).tokens for op, e in rt.manifest.ops.items())
