"""Hostile input, table-driven: every case runs one command in-process and asserts its exit code, that stderr holds
exactly one error line (no traceback) and that nothing outside the expected paths changed (every file under the
case's directory and the inputs, hashed before and after). Bundle-reader and store cases live beside their readers
(tests/test_manifest_closed_world.py, tests/test_memory_hostile.py); signals run real processes at the end."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import make_adapter

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "locomo_dev.json"


def snapshot(*roots: Path) -> dict[str, str]:
    """path -> sha256 (files), '->target' (symlinks), 'dir' (directories) for everything under `roots`."""
    out: dict[str, str] = {}
    for root in roots:
        if not os.path.lexists(root):
            continue
        items = [root] + sorted(root.rglob("*")) if root.is_dir() and not root.is_symlink() else [root]
        for p in items:
            if p.is_symlink():
                out[str(p)] = "->" + os.readlink(p)
            elif p.is_dir():
                out[str(p)] = "dir"
            else:
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def commands() -> dict[str, Callable[[list[str]], int]]:
    from exporter.cli import main as export
    from exporter.train.cli import main as train
    from runtimes.cli import main as run
    from exporter.reference import eval_main as evaluate
    from runtimes.profiler.cli import main as profile

    return {"export": export, "run": run, "eval": evaluate, "train": train, "profile": profile}


PROGS = {"export": "memlora-export", "run": "memlora-run", "eval": "memlora-eval", "train": "memlora-train",
         "profile": "memlora-profile"}


@dataclass
class Case:
    name: str
    cmd: str
    setup: Callable[["Env"], list[str]]
    """Prepares the case's files under env.dir and returns the command's arguments."""
    code: int = 1
    says: str = ""
    """A part the error line must contain (the field, the path or the rule it names)."""
    changes: Callable[["Env"], list[Path]] = lambda env: []
    """Paths the command may create or change (everything else must stay byte-identical)."""


@dataclass
class Env:
    dir: Path
    base: Path
    adapter: Path
    bundle: Path
    extra: dict[str, Path] = field(default_factory=dict)

    def user_dir(self, name: str = "mine") -> Path:
        d = self.dir / name
        d.mkdir()
        (d / "thesis.txt").write_text("a user's file")
        return d

    def adapter_with(self, name: str, cfg: object | None = None, raw: bytes | None = None) -> Path:
        d = self.dir / name
        shutil.copytree(self.adapter, d)
        if raw is not None:
            (d / "adapter_config.json").write_bytes(raw)
        elif isinstance(cfg, dict):
            full = json.loads((self.adapter / "adapter_config.json").read_text())
            full.update(cfg)
            (d / "adapter_config.json").write_text(json.dumps(full))
        else:
            (d / "adapter_config.json").write_text(json.dumps(cfg))
        return d

    def data_with(self, mutate: Callable[[list], object] | None = None, raw: bytes | None = None) -> Path:
        p = self.dir / "data.json"
        if raw is not None:
            p.write_bytes(raw)
            return p
        sample = {"sample_id": "c1", "conversation": {
            "speaker_a": "Ann", "speaker_b": "Bo", "session_1_date_time": "1:00 pm on 8 May, 2023",
            "session_1": [{"speaker": "Ann", "dia_id": "D1:1", "text": "I moved to Oslo."},
                          {"speaker": "Bo", "dia_id": "D1:2", "text": "Nice!"}]},
            "qa": [{"question": "Where does Ann live?", "answer": "Oslo", "evidence": ["D1:1"], "category": 4}],
            "observation": {"session_1_observation": {"Ann": [["Ann moved to Oslo.", "D1:1"]]}}}
        data = [sample, {**json.loads(json.dumps(sample)), "sample_id": "c2"}]
        if mutate is not None:
            data = mutate(data) or data
        p.write_text(json.dumps(data))
        return p


NOT_UTF8 = b'{"r": "\xff"}'


def _set(path: str, value: object) -> Callable[[list], None]:
    """A mutation of the LoCoMo sample list: '0.conversation.session_1.0.dia_id' = value ('-' deletes)."""

    def f(data: list) -> None:
        keys = [int(k) if k.isdigit() else k for k in path.split(".")]
        obj = data
        for k in keys[:-1]:
            obj = obj[k]
        if value == "-":
            del obj[keys[-1]]
        else:
            obj[keys[-1]] = value

    return f


def export_args(env: Env, out: Path, *extra: str) -> list[str]:
    return ["--base", str(env.base), "--adapters", "none", "--quant", "fp32", "--skip-fidelity", "--no-embedder",
            "--out", str(out), *extra]


def _symlink(env: Env, name: str, target: Path) -> Path:
    link = env.dir / name
    link.symlink_to(target)
    return link


CASES = [
    # ---- memlora-export: outputs that would destroy or overlap what the user owns
    Case("export --force onto the base model's own directory", "export",
         lambda e: export_args(e, e.base, "--force"), says="is the input"),
    Case("export into the base model's directory", "export",
         lambda e: export_args(e, e.base / "bundle"), says="is inside the input"),
    Case("export --force onto a directory holding an adapter", "export",
         lambda e: ["--base", str(e.base), "--adapter", f"extract={e.adapter_with('ad/extract', {})}",
                    "--skip-fidelity", "--no-embedder", "--out", str(e.dir / "ad"), "--force"], says="contains the input"),
    Case("export --force onto a user's directory", "export",
         lambda e: export_args(e, e.user_dir(), "--force"), says="not a bundle written by memlora"),
    Case("export onto a user's directory without --force", "export",
         lambda e: export_args(e, e.user_dir()), says="--force"),
    Case("export --force onto a user's file", "export",
         lambda e: (e.user_dir(), export_args(e, e.dir / "mine" / "thesis.txt", "--force"))[1],
         says="not a directory"),
    Case("export --force onto a directory whose manifest is not memlora's", "export",
         lambda e: ((e.user_dir() / "manifest.json").write_text('{"tool": {"name": "other"}}'),
                    export_args(e, e.dir / "mine", "--force"))[1], says="not a bundle written by memlora"),
    Case("export onto the current directory", "export", lambda e: export_args(e, Path(".")),
         says="the current directory"),
    Case("export --force onto a parent of the current directory", "export",
         lambda e: export_args(e, Path(".."), "--force"), says="contains the current directory"),
    Case("export --force onto the home directory", "export",
         lambda e: export_args(e, Path(os.environ["HOME"]), "--force"), says="home directory"),
    Case("export --force onto /", "export", lambda e: export_args(e, Path("/"), "--force"), says="root directory"),
    Case("export onto a symlink", "export",
         lambda e: export_args(e, _symlink(e, "link", e.user_dir()), "--force"), says="symbolic link"),
    # ---- memlora-export: adapter configs
    Case("adapter_config.json is a list", "export",
         lambda e: ["--base", str(e.base), "--adapter", f"extract={e.adapter_with('a', ['r', 8])}", "--out",
                    str(e.dir / "b")], says="must hold a JSON object"),
    Case("adapter_config.json rank is a string", "export",
         lambda e: ["--base", str(e.base), "--adapter", f"extract={e.adapter_with('a', {'r': '8'})}", "--out",
                    str(e.dir / "b")], says="r must be an integer"),
    Case("adapter_config.json alpha is a string", "export",
         lambda e: ["--base", str(e.base), "--adapter", f"extract={e.adapter_with('a', {'lora_alpha': 'x'})}",
                    "--out", str(e.dir / "b")], says="lora_alpha"),
    Case("adapter_config.json target_modules is a number", "export",
         lambda e: ["--base", str(e.base), "--adapter", f"extract={e.adapter_with('a', {'target_modules': 3})}",
                    "--out", str(e.dir / "b")], says="target_modules"),
    Case("adapter_config.json uses rank_pattern", "export",
         lambda e: ["--base", str(e.base), "--adapter",
                    f"extract={e.adapter_with('a', {'rank_pattern': {'q_proj': 2}})}", "--out", str(e.dir / "b")],
         says="rank_pattern"),
    Case("adapter_config.json uses alpha_pattern", "export",
         lambda e: ["--base", str(e.base), "--adapter",
                    f"extract={e.adapter_with('a', {'alpha_pattern': {'q_proj': 2}})}", "--out", str(e.dir / "b")],
         says="alpha_pattern"),
    Case("adapter_config.json uses layers_to_transform", "export",
         lambda e: ["--base", str(e.base), "--adapter",
                    f"extract={e.adapter_with('a', {'layers_to_transform': [0]})}", "--out", str(e.dir / "b")],
         says="layers_to_transform"),
    Case("adapter_config.json is not UTF-8", "export",
         lambda e: ["--base", str(e.base), "--adapter", "extract=" + str(e.adapter_with("a", raw=NOT_UTF8)),
                    "--out", str(e.dir / "b")], says="not UTF-8"),
    Case("adapter_config.json nests deeper than the parser goes", "export",
         lambda e: ["--base", str(e.base), "--adapter",
                    f"extract={e.adapter_with('a', raw=b'[' * 100000 + b']' * 100000)}", "--out", str(e.dir / "b")],
         says="adapter_config.json"),
    Case("export whose fidelity prompts do not fit --max-seq-len", "export",
         lambda e: ["--base", str(e.base), "--adapters", "none", "--quant", "fp32", "--no-embedder",
                    "--max-seq-len", "128", "--fidelity-tokens", "8", "--out", str(e.dir / "b")],
         says="does not fit max_seq_len"),
    Case("base whose chat template the sandbox refuses", "export",
         lambda e: export_args(e, e.dir / "b", "--base", str(_hostile_template_base(e))), says="chat template"),
    # ---- argparse misuse: one line, exit 2, for every command
    *[Case(f"{c} with an unknown option", c, lambda e: ["--no-such-option"], code=2, says="--help")
      for c in ("export", "run", "eval", "train", "profile")],
    Case("export --quant int3", "export", lambda e: ["--quant", "int3"], code=2, says="invalid choice"),
    # ---- memlora-run
    Case("run a prompt that is not UTF-8", "run",
         lambda e: [str(e.bundle), "--op", "extract", "--prompt", b"\xff\xfe".decode("utf-8", "surrogateescape")],
         says="not valid UTF-8"),
    Case("run a directory that is not a bundle", "run", lambda e: [str(e.user_dir()), "--prompt", "hi"],
         says="not a memlora bundle"),
    Case("run --no-verify on a damaged program", "run",
         lambda e: [str(_damaged(e)), "--op", "extract", "--prompt", "hi", "--no-verify"], says="base.pte"),
    Case("run a schema 1 bundle whose chat template the sandbox refuses", "run",
         lambda e: [str(_bundle_with(e, _schema1_with_template("{{ ''.__class__.__mro__[1].__subclasses__() }}"))),
                    "--op", "extract", "--prompt", "hi"], says="chat template"),
    Case("run a bundle whose chat format is malformed", "run",
         lambda e: [str(_bundle_with(e, lambda m: m["tokenizer"]["chat_format"].update(roles=[]))),
                    "--op", "extract", "--prompt", "hi"], says="tokenizer.chat_format.roles"),
    Case("run a bundle whose op prompt has a stray brace", "run",
         lambda e: [str(_bundle_with(e, lambda m: m["ops"]["extract"]["prompt"].update(user="{date} } {turns}"))),
                    "--op", "extract", "--prompt", "hi"], says="ops.extract.prompt.user"),
    # ---- memlora-eval: data, split files, outputs
    Case("eval --out is a user's file", "eval",
         lambda e: ["--data", str(e.data_with()), "--split", "all", "--out", str(e.user_dir() / "thesis.txt"),
                    "--bundle", str(e.bundle)], says="--force"),
    Case("eval --force --out is a user's directory", "eval",
         lambda e: ["--data", str(e.data_with()), "--split", "all", "--out", str(e.user_dir()), "--force",
                    "--bundle", str(e.bundle)], says="not a memlora-eval output"),
    Case("eval --out is the data file's directory", "eval",
         lambda e: ["--data", str(_moved(e.data_with(), e.dir / "in")), "--split", "all", "--out", str(e.dir / "in"),
                    "--force", "--bundle", str(e.bundle)], says="contains the input"),
    Case("eval --answer-turns is negative", "eval",
         lambda e: ["--data", str(e.data_with()), "--split", "all", "--out", str(e.dir / "o"), "--answer-turns", "-1",
                    "--bundle", str(e.bundle)], says="--answer-turns must be >= 0"),
    Case("eval data that is not JSON", "eval",
         lambda e: ["--data", str(e.data_with(raw=b"{not json")), "--out", str(e.dir / "o")], says="not JSON"),
    Case("eval data that is not UTF-8", "eval",
         lambda e: ["--data", str(e.data_with(raw=b'[{"sample_id": "\xff"}]')), "--out", str(e.dir / "o")],
         says="not UTF-8"),
    Case("eval data: a turn without dia_id", "eval",
         lambda e: ["--data", str(e.data_with(_set("0.conversation.session_1.0.dia_id", "-"))), "--split", "all",
                    "--out", str(e.dir / "o")], says="dia_id"),
    Case("eval data: a question's category is a string", "eval",
         lambda e: ["--data", str(e.data_with(_set("0.qa.0.category", "4"))), "--split", "all",
                    "--out", str(e.dir / "o")], says="qa[0].category"),
    Case("eval data: a session is a string", "eval",
         lambda e: ["--data", str(e.data_with(_set("1.conversation.session_1", "hello"))), "--split", "all",
                    "--out", str(e.dir / "o")], says="session_1"),
    Case("eval data: a turn's text is a number", "eval",
         lambda e: ["--data", str(e.data_with(_set("0.conversation.session_1.1.text", 7))), "--split", "all",
                    "--out", str(e.dir / "o")], says="text"),
    Case("eval data: observations are not pairs", "eval",
         lambda e: ["--data", str(e.data_with(_set("0.observation.session_1_observation.Ann", [["x"]]))),
                    "--split", "all", "--out", str(e.dir / "o")], says="observation"),
    Case("eval data: the file is an object", "eval",
         lambda e: ["--data", str(e.data_with(raw=b'{"a": 1}')), "--out", str(e.dir / "o")], says="list"),
    Case("eval split file that is not JSON", "eval",
         lambda e: ["--data", str(e.data_with()), "--split-file", str(_write(e, "split.json", b"nope")),
                    "--out", str(e.dir / "o")], says="not JSON"),
    Case("eval split file without the split", "eval",
         lambda e: ["--data", str(e.data_with()), "--split-file", str(_write(e, "split.json", b'{"train": []}')),
                    "--out", str(e.dir / "o")], says='"val"'),
    Case("eval split file with numbers for ids", "eval",
         lambda e: ["--data", str(e.data_with()), "--split-file", str(_write(e, "split.json", b'{"val": [1, 2]}')),
                    "--out", str(e.dir / "o")], says="sample_id strings"),
    # ---- memlora-profile: report outputs and data
    Case("profile --force --report onto a user's directory", "profile",
         lambda e: [str(e.bundle), "--report", str(e.user_dir()), "--force", "--quiet"],
         says="not a memlora-profile report"),
    Case("profile --force --report onto a user's file", "profile",
         lambda e: [str(e.bundle), "--report", str(e.user_dir() / "thesis.txt"), "--force", "--quiet"],
         says="not a directory"),
    Case("profile --report inside the bundle", "profile",
         lambda e: [str(e.bundle), "--report", str(e.bundle / "r"), "--quiet"], says="inside the input"),
    Case("profile data with a wrong type", "profile",
         lambda e: [str(e.bundle), "--report", str(e.dir / "r"), "--quiet", "--data",
                    str(e.data_with(_set("0.qa", "all of them")))], says="qa"),
    # ---- memlora-train
    Case("train --out is an existing directory", "train",
         lambda e: ["--op", "extract", "--data", str(e.data_with()), "--out", str(e.user_dir())],
         says="already exists"),
    Case("train data that is not JSON", "train",
         lambda e: ["--op", "extract", "--data", str(e.data_with(raw=b"[1, 2")), "--out", str(e.dir / "o")],
         says="not JSON"),
    Case("train data: a turn's speaker is missing", "train",
         lambda e: ["--op", "extract", "--data", str(e.data_with(_set("0.conversation.session_1.0.speaker", "-"))),
                    "--out", str(e.dir / "o")], says="speaker"),
    Case("train vqa --out is an existing directory", "train",
         lambda e: ["--op", "vqa", "--out", str(e.user_dir())], says="already exists; give a new path"),
    Case("train vqa: no steps", "train",
         lambda e: ["--op", "vqa", "--steps", "0", "--out", str(e.dir / "o")], says="steps must be a positive int"),
    Case("train --out is the data file's directory", "train",
         lambda e: ["--op", "extract", "--data", str(_moved(e.data_with(), e.dir / "in")), "--out", str(e.dir / "in")],
         says="contains the input"),
]


def _moved(f: Path, d: Path) -> Path:
    d.mkdir()
    return f.rename(d / f.name)


def _write(env: Env, name: str, content: bytes) -> Path:
    p = env.dir / name
    p.write_bytes(content)
    return p


def _hostile_template_base(env: Env) -> Path:
    d = env.dir / "evil_base"
    shutil.copytree(env.base, d)
    cfg_path = d / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["chat_template"] = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    cfg_path.write_text(json.dumps(cfg))
    (d / "chat_template.jinja").unlink(missing_ok=True)
    return d


def _schema1_with_template(template: str) -> Callable[[dict], None]:
    """Schema 1 bundles (before prompts became data) are still read, rendering their Jinja template."""

    def f(m: dict) -> None:
        m["schema_version"] = 1
        del m["tokenizer"]["chat_format"]
        for op in m["ops"].values():
            del op["prompt"]
        m["tokenizer"]["chat_template"] = template

    return f


def _bundle_with(env: Env, mutate: Callable[[dict], None]) -> Path:
    d = env.dir / "bundle"
    shutil.copytree(env.bundle, d)
    m = json.loads((d / "manifest.json").read_text())
    mutate(m)
    (d / "manifest.json").write_text(json.dumps(m))
    return d


def _damaged(env: Env) -> Path:
    d = env.dir / "bundle"
    shutil.copytree(env.bundle, d)
    p = d / "base.pte"
    p.write_bytes(p.read_bytes()[: 4096])
    return d


@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny_llama, llama_adapters):
    """A tiny bundle to read (exported once, never written to by the cases)."""
    from exporter.cli import main

    out = tmp_path_factory.mktemp("hostile_bundle") / "bundle"
    assert main(["--base", str(tiny_llama), "--adapters", "none", "--quant", "fp32", "--skip-fidelity",
                 "--no-embedder", "--out", str(out)]) == 0
    return {"base": tiny_llama, "adapter": llama_adapters["extract"], "bundle": out}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile(case: Case, shared, tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "case"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    env = Env(dir=work, base=shared["base"], adapter=shared["adapter"], bundle=shared["bundle"])
    args = case.setup(env)
    capsys.readouterr()
    roots = [tmp_path, shared["base"], shared["adapter"], shared["bundle"]]
    before = snapshot(*roots)
    try:
        code = commands()[case.cmd](args)
    except SystemExit as e:  # argparse exits
        code = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    prog = PROGS[case.cmd]
    error_lines = [line for line in lines if line.startswith(f"{prog}: error:") or line.startswith(f"{prog}: internal")]
    assert code == case.code, err
    assert "Traceback" not in err, err
    assert len(error_lines) == 1 and lines[-1] == error_lines[0], err
    assert case.says in error_lines[0], error_lines[0]
    print(f"{case.name}: {error_lines[0]}")
    assert not error_lines[0].startswith(f"{prog}: internal"), error_lines[0]
    allowed = {str(p) for p in case.changes(env)}
    after = snapshot(*roots)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)
               and not any(k == a or k.startswith(a + os.sep) for a in allowed)}
    assert not changed, f"changed outside the expected paths: {sorted(changed)[:5]}"


def test_hostile_case_count():
    """The issue asks for at least 40 kinds here, across all five commands."""
    assert len(CASES) >= 40
    assert {c.cmd for c in CASES} == set(PROGS)


# ----------------------------------------------------------------------------------------------- output rules
def test_force_replaces_an_earlier_bundle_only(shared, tmp_path, capsys):
    from exporter.cli import main

    out = tmp_path / "b"
    shutil.copytree(shared["bundle"], out)
    (out / "old-extra.txt").write_text("from the earlier export")
    assert main(export_args(Env(tmp_path, shared["base"], shared["adapter"], shared["bundle"]), out, "--force")) == 0
    assert (out / "manifest.json").is_file() and not (out / "old-extra.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no partial or old directory left beside it
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~_umask())


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_directory_appearing_during_the_run_is_never_replaced(tmp_path):
    from runtimes.outdir import OutputDir, OutputError

    for force in (False, True):
        out = tmp_path / f"out-{force}"
        od = OutputDir(out, force=force, owned=lambda p: False, kind="report")
        with pytest.raises(OutputError, match="left untouched"):
            with od as tmp:
                (tmp / "report.json").write_text("{}")
                out.mkdir(exist_ok=True)
                (out / "theirs.txt").write_text("appeared meanwhile")
                od.commit()
        assert (out / "theirs.txt").read_text() == "appeared meanwhile"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out-False", "out-True"]


def test_stale_partial_directories(tmp_path, caplog):
    from runtimes.outdir import MARKER, OutputDir

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    stale = tmp_path / ".out.partial-abc"
    stale.mkdir()
    (stale / MARKER).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    alive = tmp_path / ".out.partial-live"
    alive.mkdir()
    (alive / MARKER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    unknown = tmp_path / ".out.partial-old"
    unknown.mkdir()
    (unknown / "base.pte").write_bytes(b"x")
    with caplog.at_level("WARNING"):
        od = OutputDir(tmp_path / "out", force=False, owned=lambda p: False, kind="bundle")
        with od as tmp:
            (tmp / "x").write_text("1")
            od.commit()
    assert not stale.exists()  # killed run: removed
    assert alive.exists()  # a running process's: kept
    assert unknown.exists() and str(unknown) in caplog.text  # no marker: reported, not removed
    assert (tmp_path / "out" / "x").read_text() == "1" and not (tmp_path / "out" / MARKER).exists()


def test_output_files_get_the_users_permissions(tmp_path):
    """A writer that makes 0600 files (onnx's external data does) leaves them readable as the user's umask says:
    `adb push` keeps the mode, and the app cannot read a 0600 file of the shell user."""
    from runtimes.outdir import OutputDir

    od = OutputDir(tmp_path / "out", force=False, owned=lambda p: False, kind="bundle")
    with od as tmp:
        (tmp / "sub").mkdir(mode=0o700)
        for f in (tmp / "foundation.onnx.data", tmp / "sub" / "x"):
            f.write_bytes(b"w")
            os.chmod(f, 0o600)
        od.commit()
    out = tmp_path / "out"
    assert oct((out / "foundation.onnx.data").stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert oct((out / "sub").stat().st_mode & 0o777) == oct(0o777 & ~_umask())
    assert oct((out / "sub" / "x").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def test_disk_full_while_writing_leaves_nothing(shared, tmp_path, monkeypatch, capsys):
    """ENOSPC (or any OS error) while the bundle is written: one line naming the path, nothing left behind."""
    import errno

    from exporter import bundle
    from exporter.cli import main

    def full(self, manifest):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.dir / "manifest.json"))

    monkeypatch.setattr(bundle.BundleWriter, "commit", full)
    out = tmp_path / "b"
    code = main(export_args(Env(tmp_path, shared["base"], shared["adapter"], shared["bundle"]), out))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("memlora-export: error: No space left on device:") and "manifest.json" in err[-1]
    assert not any("Traceback" in line for line in err)
    assert list(tmp_path.iterdir()) == []


def test_train_restart_never_removes_a_foreign_checkpoint_directory(tmp_path):
    from exporter.errors import OutputError
    from exporter.train.trainer import TrainConfig, train

    cfg = TrainConfig(op="extract", out=str(tmp_path / "adapter"))
    cfg.checkpoint_dir.mkdir()
    (cfg.checkpoint_dir / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not a memlora-train checkpoint directory"):
        train(cfg, train_examples=[], val_examples=[], restart=True)
    assert (cfg.checkpoint_dir / "notes.txt").read_text() == "mine"


def test_eval_store_names_never_leave_the_output():
    from runtimes.memory.eval import file_safe

    for sid in ("../../etc/passwd", "/abs", "a/b", "..", "conv-26", "x" * 500, "a\x00b"):
        name = file_safe(sid)
        assert "/" not in name and "\x00" not in name and name not in ("", ".", "..") and len(name) <= 80
    assert file_safe("conv-26") == "conv-26"
    assert file_safe("a/b") != file_safe("a_b")


# ----------------------------------------------------------------------------------------------- real processes
def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_during_export_removes_the_partial_bundle(sig, shared, tmp_path):
    exe = Path(sys.executable).parent / "memlora-export"
    assert exe.exists()
    out = tmp_path / "b"
    p = _start([str(exe), *export_args(Env(tmp_path, shared["base"], shared["adapter"], shared["bundle"]), out)],
               tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(x.name.startswith(".b.partial-") for x in tmp_path.iterdir()):
        time.sleep(0.05)
    time.sleep(0.5)
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + sig, err
    lines = [line for line in err.splitlines() if line.startswith("memlora-export:")]
    assert lines[-1] == f"memlora-export: interrupted ({signal.Signals(sig).name}); no bundle was written"
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_cli_start_up_is_quiet(shared, tmp_path):
    """A user error from the real console script is exactly one line: no torch / torchao / cpuinfo chatter."""
    exe = Path(sys.executable).parent
    env = {**os.environ, "MEMLORA_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([str(exe / "memlora-run"), str(shared["bundle"]), "--op", "nope", "--prompt", "hi"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 1
    assert r.stderr.splitlines() == ["memlora-run: error: op 'nope' is not in this bundle; ops: "
                                     "['extract', 'generate', 'update']"], r.stderr
    r = subprocess.run([str(exe / "memlora-run"), str(shared["bundle"]), "--op", "extract", "--prompt", "hi",
                        "--max-new-tokens", "2"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len([line for line in r.stderr.splitlines() if line.strip()]) == 1, r.stderr  # the stats line only
    r = subprocess.run([str(exe / "memlora-export"), "--quant", "int3"], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    # A whole export: our stage lines and the summary tables only (no "Loading weights" bar, no library warnings).
    out = tmp_path / "b"
    r = subprocess.run([str(exe / "memlora-export"), *export_args(Env(tmp_path, shared["base"], shared["adapter"],
                                                                      shared["bundle"]), out)],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    foreign = [line for line in r.stderr.splitlines() if line.strip() and not line.startswith("memlora.export: ")]
    assert foreign == [], foreign
    assert "export time" in r.stdout  # the summary
    assert "memlora.export: lower base done in" in r.stderr
