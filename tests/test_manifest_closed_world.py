"""A bundle is a closed world: every hostile manifest of tests/data/hostile_manifests.json gets the verdict recorded
there (android_demo/core's HostileManifestTest holds Manifest.java to the same file), and no JSON at all makes
load_manifest raise anything but BundleError (hypothesis)."""

from __future__ import annotations

import copy
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtimes.manifest import BundleError, Manifest, is_plain_name, load_manifest

VECTORS = json.loads((Path(__file__).parent / "data" / "hostile_manifests.json").read_text())
CASES = VECTORS["cases"]


def _subst(v: Any, sandbox: str) -> Any:
    if isinstance(v, str):
        return v.replace("$SANDBOX", sandbox)
    if isinstance(v, list):
        return [_subst(x, sandbox) for x in v]
    if isinstance(v, dict):
        return {_subst(k, sandbox): _subst(x, sandbox) for k, x in v.items()}
    return v


def _mutate(raw: Any, ops: list[dict[str, Any]]) -> Any:
    for op in ops:
        path = op["path"]
        if not path:
            raw = copy.deepcopy(op["set"])
            continue
        node = raw
        for k in path[:-1]:
            node = node[k]
        if op.get("delete"):
            del node[path[-1]]
        else:
            node[path[-1]] = copy.deepcopy(op["set"])
    return raw


def build_case(case: dict[str, Any], sandbox: Path) -> Path:
    """Lay out one case in `sandbox` as the vectors file describes it; returns the directory to load."""
    s = str(sandbox.resolve())
    bundle = sandbox / case.get("bundle_at", "bundle")
    bundle.mkdir(parents=True)
    for name, text in VECTORS["base"]["files"].items():
        (bundle / name).write_text(text, encoding="utf-8")
    for rel in case.get("remove", []):
        (sandbox / rel).unlink()
    for rel, text in case.get("files", {}).items():
        p = sandbox / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    raw = _subst(_mutate(copy.deepcopy(VECTORS["base"]["manifest"]), case.get("mutate", [])), s)
    text = case.get("manifest_text") or json.dumps(raw, indent=1)
    target = sandbox / case["manifest_at"] if "manifest_at" in case else bundle / "manifest.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    for rel, dest in case.get("symlinks", {}).items():
        link = sandbox / rel
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)
        elif link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(_subst(dest, s))
    return sandbox / case.get("load", case.get("bundle_at", "bundle"))


def named_files(m: Manifest) -> list[str]:
    """Every file name the manifest gives a reader to open."""
    raw = m.raw
    names = [raw["tokenizer"]["file"]]
    for e in m.ops.values():
        names += [e.program, *e.data_files]
        for b in e.backends.values():
            names += [b["program"], *(b.get("data_files") or []), *([b["adapter_file"]] if b.get("adapter_file") else [])]
    for info in (raw.get("backends") or {}).values():
        if info.get("genai_config"):
            names.append(info["genai_config"])
    if m.embedder:
        names += [m.embedder["program"], m.embedder["tokenizer"]]
    if m.vision:
        names += [*([m.vision["program"]] if "program" in m.vision else []), *(m.vision.get("data_files") or [])]
        vo = m.vision.get("onnx") or {}
        names += [vo[k] for k in ("encoder", "embed", "decoder", "adapter_file") if k in vo] + list(vo.get("data_files") or [])
    return names


def test_vectors_cover_the_issue():
    names = {c["name"] for c in CASES}
    assert len(names) == len(CASES) >= 60
    for must in ("program-dotdot", "program-absolute", "tokenizer-dotdot", "embedder-program-outside",
                 "data-files-outside", "adapter-file-outside", "program-backslash", "program-nul", "program-empty",
                 "program-dot", "symlink-out", "files-key-dotdot", "schema-version-string", "schema-version-bool",
                 "schema-version-next", "ops-not-object", "stop-token-ids-strings", "files-entry-no-sha256",
                 "listed-file-missing", "bundle-dir-symlink"):
        assert must in names, must


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_hostile_manifest(case, tmp_path):
    d = build_case(case, tmp_path)
    for verify in case.get("verify", [True, False]):
        expect = case["expect"]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = load_manifest(d, verify=verify)
        except BundleError as e:
            msg = str(e)
            assert expect != "ok", f"{case['name']} (verify={verify}): refused a good bundle: {msg}"
            assert "\n" not in msg, msg
            if expect.get("field"):
                assert expect["field"] in msg, f"{case['name']} (verify={verify}): {msg!r} does not name {expect['field']!r}"
            continue
        assert expect == "ok", f"{case['name']} (verify={verify}): loaded a bundle that must be refused ({expect})"
        if verify:
            for name in named_files(m):
                p = m.path(name)
                assert p.is_file() and p.resolve().is_relative_to(d.resolve()), name
            assert m.tokenizer_file == m.path(m.raw["tokenizer"]["file"])


def test_checked_accessor_refuses_what_load_would(tmp_path):
    d = build_case({"name": "base"}, tmp_path)
    m = load_manifest(d)
    for bad in ("../outside/other.pte", "/etc/passwd", "", ".", "..", "a/b", "a\\b", "a\0b", "C:x", "not-listed.pte"):
        with pytest.raises(BundleError):
            m.path(bad)
    # a listed file swapped for a link to outside after loading is refused when opened
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "model.pte").write_text(VECTORS["base"]["files"]["model.pte"])
    (d / "model.pte").unlink()
    (d / "model.pte").symlink_to(tmp_path / "outside" / "model.pte")
    with pytest.raises(BundleError, match="outside the bundle"):
        m.path("model.pte")
    (d / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="bundle file missing: tokenizer.json"):
        m.tokenizer_file


def test_plain_name_rule():
    for good in ("model.pte", "tokenizer.json", "foundation.onnx.data", "a b", "é.pte", ".hidden", "x" * 255):
        assert is_plain_name(good), good
    for bad in ("", ".", "..", "../x", "/x", "a/b", "a\\b", "C:x", "a\0b", "a\nb", "a\x7fb", "x" * 256, "é" * 128,
                "a\ud800", 3, None):
        assert not is_plain_name(bad), bad


# ------------------------------------------------------------------------------------------------ property-based
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4),
                    max_leaves=20)


@pytest.fixture(scope="module")
def base_bundle(tmp_path_factory) -> Path:
    d = build_case({"name": "base"}, tmp_path_factory.mktemp("base"))
    (d / "manifest.json").unlink()
    return d


def _load_only_bundle_errors(bundle: Path, text: str) -> None:
    (bundle / "manifest.json").write_text(text, encoding="utf-8", errors="surrogatepass")
    for verify in (True, False):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = load_manifest(bundle, verify=verify)
        except BundleError as e:
            assert "\n" not in str(e)
            continue
        # what loads can be used: its fields have their types, its names open or fail with BundleError
        assert isinstance(m.max_seq_len, int) and m.max_seq_len >= 1
        assert m.chat_template is None or isinstance(m.chat_template, str)
        for e in m.ops.values():
            assert isinstance(e.program, str) and all(isinstance(t, int) for t in e.stop_token_ids)
        for name in named_files(m):
            try:
                m.path(name)
            except BundleError:
                pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(JSON)
def test_any_json_gives_manifest_or_bundle_error(base_bundle, value):
    _load_only_bundle_errors(base_bundle, json.dumps(value))


def _paths(v: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(v, dict):
        for k, x in v.items():
            out += _paths(x, prefix + (k,))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            out += _paths(x, prefix + (i,))
    return out


BASE_PATHS = _paths(VECTORS["base"]["manifest"])[1:]


@st.composite
def mutated(draw) -> dict[str, Any]:
    raw = copy.deepcopy(VECTORS["base"]["manifest"])
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(BASE_PATHS))
        node = raw
        try:
            for k in path[:-1]:
                node = node[k]
            action = draw(st.sampled_from(["set", "delete", "rename"]))
            if action == "set":
                node[path[-1]] = draw(JSON | st.sampled_from(["../x", "/etc/passwd", "", ".", "a/b", "..", "x\0"]))
            elif action == "delete":
                del node[path[-1]]
            elif isinstance(node, dict):
                node[draw(st.text(max_size=12) | st.sampled_from(["../model.pte", "/model.pte"]))] = node.pop(path[-1])
        except (KeyError, IndexError, TypeError):  # an earlier mutation removed or retyped the parent
            pass
    return raw


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutated())
def test_mutated_manifest_gives_manifest_or_bundle_error(base_bundle, raw):
    _load_only_bundle_errors(base_bundle, json.dumps(raw))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_any_bytes_give_bundle_error(base_bundle, data):
    (base_bundle / "manifest.json").write_bytes(data)
    with pytest.raises(BundleError):
        load_manifest(base_bundle)


def test_deeply_nested_json_is_a_bundle_error(base_bundle):
    _load_only_bundle_errors(base_bundle, "[" * 100_000 + "]" * 100_000)
    _load_only_bundle_errors(base_bundle, '{"schema_version": 1' + "0" * 5000 + "}")


# ------------------------------------------------------------------------------------------------ real runtimes
@pytest.fixture(scope="module")
def real_bundle(tmp_path_factory, tiny_llama) -> Path:
    from exporter.pipeline import run
    from exporter.spec import ExportSpec, FidelitySpec, ModelSpec, OutputSpec, QuantSpec

    out = tmp_path_factory.mktemp("closed") / "b"
    run(ExportSpec(model=ModelSpec(base=str(tiny_llama), max_seq_len=256), quant=QuantSpec("fp32"),
                   output=OutputSpec(str(out)), fidelity=FidelitySpec(enabled=False)))
    return out


def _copy(bundle: Path, dst: Path, edit=None) -> Path:
    shutil.copytree(bundle, dst)
    if edit is not None:
        raw = json.loads((dst / "manifest.json").read_text())
        edit(raw)
        (dst / "manifest.json").write_text(json.dumps(raw))
    return dst


def _run_fails(capsys, args: list[str]) -> str:
    """memlora-run must exit 1 with one error line and no traceback."""
    from runtimes.cli import main

    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("memlora-run: error:")]
    assert code == 1 and len(errors) == 1, err
    assert not any("Traceback" in line for line in err), err
    return errors[0]


def test_run_refuses_a_program_outside_the_bundle(real_bundle, tmp_path, capsys):
    """The reported bug: a manifest naming ../../somewhere/other.pte (with its real sha256) ran that program."""
    program = load_manifest(real_bundle).ops["generate"].program
    other = tmp_path / "somewhere" / "other.pte"
    other.parent.mkdir()
    shutil.copy(real_bundle / program, other)
    entry = json.loads((real_bundle / "manifest.json").read_text())["files"][program]

    def edit(raw):
        raw["files"]["../../somewhere/other.pte"] = entry
        for op in raw["ops"].values():
            op["program"] = "../../somewhere/other.pte"

    b = _copy(real_bundle, tmp_path / "x" / "b", edit)
    (b / program).unlink()
    for extra in ([], ["--no-verify"]):
        msg = _run_fails(capsys, [str(b), "--op", "generate", "--prompt", "hi", "--max-new-tokens", "2", *extra])
        assert "ops." in msg and ".program" in msg and "plain file name" in msg, msg


def test_run_refuses_a_tokenizer_outside_the_bundle(real_bundle, tmp_path, capsys):
    shutil.copy(real_bundle / "tokenizer.json", tmp_path / "tok.json")

    def edit(raw):
        raw["tokenizer"]["file"] = "../tok.json"

    b = _copy(real_bundle, tmp_path / "b", edit)
    for extra in ([], ["--no-verify"]):
        msg = _run_fails(capsys, [str(b), "--op", "generate", "--prompt", "hi", *extra])
        assert "tokenizer.file" in msg, msg
    # the same through a symlink inside the bundle: refused, not followed
    b2 = _copy(real_bundle, tmp_path / "b2")
    (b2 / "tokenizer.json").unlink()
    (b2 / "tokenizer.json").symlink_to(tmp_path / "tok.json")
    for extra in ([], ["--no-verify"]):
        msg = _run_fails(capsys, [str(b2), "--op", "generate", "--prompt", "hi", *extra])
        assert "tokenizer.json leads outside the bundle" in msg, msg


def test_no_verify_on_a_damaged_bundle_is_one_line(real_bundle, tmp_path, capsys):
    program = load_manifest(real_bundle).ops["generate"].program
    b = _copy(real_bundle, tmp_path / "truncated")
    data = (b / program).read_bytes()
    (b / program).write_bytes(data[: len(data) // 3])
    msg = _run_fails(capsys, [str(b), "--op", "generate", "--prompt", "hi", "--no-verify"])
    assert program in msg and "cannot load" in msg, msg
    assert "truncated" in _run_fails(capsys, [str(b), "--op", "generate", "--prompt", "hi"])
    b = _copy(real_bundle, tmp_path / "garbage")
    (b / program).write_bytes(b"\0" * len(data))
    msg = _run_fails(capsys, [str(b), "--op", "generate", "--prompt", "hi", "--no-verify"])
    assert program in msg, msg
    b = _copy(real_bundle, tmp_path / "tokenizer")
    (b / "tokenizer.json").write_text("{ not a tokenizer")
    msg = _run_fails(capsys, [str(b), "--op", "generate", "--prompt", "hi", "--no-verify"])
    assert "tokenizer.json" in msg, msg
    b = _copy(real_bundle, tmp_path / "missing")
    (b / program).unlink()
    msg = _run_fails(capsys, [str(b), "--op", "generate", "--prompt", "hi", "--no-verify"])
    assert f"bundle file missing: {program}" in msg, msg
    b = _copy(real_bundle, tmp_path / "typed", lambda raw: raw["ops"]["generate"].update(stop_token_ids="2"))
    msg = _run_fails(capsys, [str(b), "--op", "generate", "--prompt", "hi", "--no-verify"])
    assert "ops.generate.stop_token_ids: expected an array, got a string" in msg, msg


def test_relative_symlinked_bundle_runs_and_profiles(real_bundle, tmp_path, capsys, monkeypatch):
    """`latest -> bundle-v3`, given as a relative path: memlora-run and memlora-profile's per-op processes (which run
    in the repository root) both find it."""
    from runtimes.cli import main
    from runtimes.profiler import workloads
    from runtimes.profiler.cli import main as profile_main

    shutil.copytree(real_bundle, tmp_path / "bundle-v3")
    (tmp_path / "latest").symlink_to("bundle-v3")
    monkeypatch.chdir(tmp_path)
    assert main(["latest", "--op", "generate", "--prompt", "hi", "--max-new-tokens", "2", "--json"]) == 0
    capsys.readouterr()
    if workloads.default_data_path() is None:
        pytest.skip("../shared/data/locomo_dev.json not present")
    rc = profile_main(["latest", "--report", "report", "--ops", "generate", "--samples", "1", "--repeats", "1",
                       "--warmup", "0", "--rounds", "1", "--new-tokens", "generate=2", "--no-cycle", "--no-breakdown",
                       "--no-plots", "--quiet", "--threads", "1"])
    assert rc == 0, capsys.readouterr().err
    r = json.loads((tmp_path / "report" / "report.json").read_text())
    assert r["bundle"]["path"] == str((tmp_path / "bundle-v3").resolve())
