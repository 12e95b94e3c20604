"""Bad input: one clear error line, exit code 1, no traceback, no bundle (partial or otherwise). One test per case."""

import json
import shutil
from pathlib import Path

import pytest

from exporter.cli import main
from tests.conftest import make_adapter


def run_cli(capsys, args):
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    errors = [l for l in err if l.startswith("memlora-export: error:")]
    assert code == 1
    assert len(errors) == 1 and err[-1] == errors[0], err
    assert not any("Traceback" in l for l in err)
    return errors[0]


def assert_no_bundle(out: Path):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


@pytest.fixture
def out(tmp_path):
    return tmp_path / "bundle"


@pytest.fixture(scope="module")
def good_adapter(tmp_path_factory, tiny_llama):
    return make_adapter(tiny_llama, tmp_path_factory.mktemp("good") / "a")


def copy_adapter(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_adapter_for_another_base(capsys, out, tmp_path, tiny_llama, tiny_gemma3):
    other = make_adapter(tiny_gemma3, tmp_path / "gemma_adapter", ("q_proj",))
    msg = run_cli(capsys, ["--base", str(tiny_llama), "--adapter", f"extract={other}", "--out", str(out)])
    assert "trained for another base" in msg and "'extract'" in msg
    assert_no_bundle(out)


def test_missing_target_modules(capsys, out, tmp_path, tiny_llama, good_adapter):
    a = copy_adapter(good_adapter, tmp_path / "a")
    cfg = json.loads((a / "adapter_config.json").read_text())
    cfg["target_modules"] = ["c_attn", "q_proj"]
    (a / "adapter_config.json").write_text(json.dumps(cfg))
    msg = run_cli(capsys, ["--base", str(tiny_llama), "--adapter", f"update={a}", "--out", str(out)])
    assert "['c_attn'] do not exist" in msg
    assert_no_bundle(out)


def test_pickle_only_adapter_refused(capsys, out, tmp_path, tiny_llama, good_adapter):
    a = copy_adapter(good_adapter, tmp_path / "a")
    (a / "adapter_model.safetensors").rename(a / "adapter_model.bin")
    msg = run_cli(capsys, ["--base", str(tiny_llama), "--adapter", f"extract={a}", "--out", str(out)])
    assert "pickles are refused" in msg
    assert_no_bundle(out)


def test_corrupt_safetensors(capsys, out, tmp_path, tiny_llama, good_adapter):
    a = copy_adapter(good_adapter, tmp_path / "a")
    (a / "adapter_model.safetensors").write_bytes(b"\x07" * 64 + b"not a safetensors file")
    msg = run_cli(capsys, ["--base", str(tiny_llama), "--adapter", f"extract={a}", "--out", str(out)])
    assert "corrupt or truncated safetensors" in msg
    assert_no_bundle(out)


def test_truncated_safetensors(capsys, out, tmp_path, tiny_llama, good_adapter):
    a = copy_adapter(good_adapter, tmp_path / "a")
    f = a / "adapter_model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    msg = run_cli(capsys, ["--base", str(tiny_llama), "--adapter", f"extract={a}", "--out", str(out)])
    assert "corrupt or truncated safetensors" in msg
    assert_no_bundle(out)


@pytest.mark.parametrize("item", ["Extract=x", "ex-tract=x", "extract"])
def test_bad_op_name_format(capsys, out, item):
    msg = run_cli(capsys, ["--adapter", item, "--out", str(out)])
    assert "adapter op name must match" in msg or "--adapter expects OP=DIR" in msg
    assert_no_bundle(out)


def test_unknown_embedded_model(capsys, out):
    msg = run_cli(capsys, ["--base", "llama-7b", "--out", str(out)])
    assert "unknown embedded model 'llama-7b'" in msg and "smollm2-135m" in msg
    assert_no_bundle(out)


def test_output_exists_refused_without_force(capsys, out):
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    msg = run_cli(capsys, ["--out", str(out)])
    assert "already exists" in msg and "--force" in msg
    assert (out / "keep.txt").read_text() == "user data"


def test_unwritable_output_dir(capsys):
    msg = run_cli(capsys, ["--out", "/proc/memlora_bundle"])
    assert "not writable" in msg
    assert not Path("/proc/memlora_bundle").exists()


def test_missing_base_path(capsys, out):
    msg = run_cli(capsys, ["--base", "/nonexistent/model.gguf", "--out", str(out)])
    assert "not found" in msg
