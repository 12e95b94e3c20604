"""MemLoRA-V's vision op on a bundle (the manifest's `vision` section): answer a question about an image with the
bundle's `vision.pte` run by ExecuTorch's Python runtime, the way ExecuTorch's multimodal runner runs it
(MultimodalPrefiller: `vision_encoder` on the uint8 image, `token_embedding` on each text part, `text_decoder` on
each part's embeddings in turn at its cache position; then greedy decoding, one token's embedding at a time).

`backend="onnx"` runs the same steps on the bundle's ONNX graphs of the vision op (`vision.onnx`, --format both)
with plain onnxruntime: the encoder graph, the embedding lookup and the decoder cut from the foundation graph, the
KV cache held here, the op's `.onnx_adapter` made active per run (onnxruntime's LoraAdapter).

The image is converted to RGB and resized to the manifest's `image.size` (bilinear, PIL); the program normalises it.
The prompt is the manifest's `prompt.before`, the image, then `prompt.after` with the question in its slot, each
text part tokenized on its own without special tokens (as the vision op was trained).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .manifest import BundleError, Manifest, load_manifest, one_line

QUESTION_SLOT = "{question}"


def final_answer(text: str, after: str | None) -> str:
    """The answer in a generated text: what follows the last `after` (the manifest's `generation.answer_after`; an op
    trained to name what it sees first: "blue, so yes" -> "yes"), else the whole text; stripped."""
    return text.rsplit(after, 1)[-1].strip() if after and after in text else text.strip()


def image_tensor(image: Any, size: int) -> Any:
    """A PIL image, or the path of an image file, -> the uint8 [1, 3, size, size] RGB tensor `vision_encoder` takes."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    if not isinstance(image, Image.Image):
        try:
            with Image.open(image) as im:
                image = im.convert("RGB")
        except (OSError, UnidentifiedImageError) as e:
            raise BundleError(f"{image}: not a readable image ({one_line(e)})") from None
    im = image.convert("RGB").resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).unsqueeze(0).contiguous()


class VisionRunner:
    """The bundle's vision op: `answer(image, question)` -> the generated answer (str)."""

    def __init__(self, bundle: str | Path | Manifest, backend: str | None = None, threads: int | None = None):
        from .base import bundle_tokenizer
        from .executorch import _load_kernels, load_methods

        self.manifest = bundle if isinstance(bundle, Manifest) else load_manifest(bundle)
        v = self.manifest.vision
        if v is None:
            raise BundleError(f"{self.manifest.root}: the bundle has no vision op (export it with --vision)")
        self.entry = v
        self.tokenizer = bundle_tokenizer(self.manifest)
        self.stop_ids = set(v.get("stop_token_ids") or [])
        self.max_new_tokens = int((v.get("generation") or {}).get("max_new_tokens", 8))
        self.max_seq_len = self.manifest.max_seq_len
        if backend is None:  # the ExecuTorch program where the bundle has one, else its ONNX graphs (--format onnx)
            backend = "executorch" if v.get("program") else "onnx"
        self.backend = backend
        if backend == "onnx":
            self._methods = _OnnxVision(self.manifest, threads).methods()
            return
        if backend != "executorch":
            raise BundleError(f"vision backend must be executorch or onnx, got {backend!r}")
        if not v.get("program"):
            raise BundleError("the bundle's vision op is ONNX graphs only (exported with --format onnx): run it with "
                              "the onnx backend")
        program = self.manifest.path(v["program"])
        data = [self.manifest.path(f) for f in v["data_files"]]
        try:
            _, loaded = load_methods(_load_kernels(), program, data, list(v["methods"].values()))
        except BundleError:  # a data file refused by merge_data_files: its own line
            raise
        except Exception as e:
            raise BundleError(f"executorch cannot load {v['program']}: {one_line(e)}") from e
        self._methods = {k: loaded[name] for k, name in v["methods"].items()}

    def _run(self, method: str, *inputs: Any) -> Any:
        try:
            return self._methods[method].execute(list(inputs))[0]
        except Exception as e:
            raise BundleError(f"vision op step {method!r} failed: {one_line(e)}") from e

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def answer(self, image: Any, question: str, max_new_tokens: int | None = None, whole: bool = False) -> str:
        """The answer: the generated text after the last `generation.answer_after` where the op has one (an op
        trained to name what it sees first: "blue, so yes" -> "yes"); `whole`: all of the text (captions). The whole
        text of the last call is `last_text`."""
        self.last_text = self.tokenizer.decode(self.answer_ids(image, question, max_new_tokens),
                                               skip_special_tokens=True).strip()
        return self.last_text if whole else final_answer(self.last_text,
                                                         (self.entry.get("generation") or {}).get("answer_after"))

    def answer_ids(self, image: Any, question: str, max_new_tokens: int | None = None,
                   ignore_stop: bool = False) -> list[int]:
        """Greedy answer tokens; `ignore_stop`: decode exactly the limit (profiling). Times of the last call are in
        `last_stats` (encode_ms, prefill_ms, prompt_tokens, decode_ms, new_tokens)."""
        import time

        import torch

        v = self.entry
        pixels = image_tensor(image, int(v["image"]["size"]))
        t0 = time.perf_counter()
        visual = self._run("image", pixels)
        t1 = time.perf_counter()
        parts = [self._ids(v["prompt"]["before"]), None,
                 self._ids(v["prompt"]["after"].replace(QUESTION_SLOT, question.strip()))]
        pos, logits = 0, None
        for part in parts:  # prefill each input in turn, as ExecuTorch's MultimodalPrefiller does
            if part is not None and not part:
                continue
            h = visual if part is None else self._run("embed", torch.tensor([part], dtype=torch.long))
            if pos + h.shape[1] >= self.max_seq_len:
                raise BundleError(f"the question is too long for the bundle's max_seq_len {self.max_seq_len}")
            logits = self._run("decode", h, torch.tensor([pos], dtype=torch.long))
            pos += h.shape[1]
        t2, prompt_tokens = time.perf_counter(), pos
        out: list[int] = []
        limit = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        while len(out) < limit:
            tok = int(torch.argmax(logits[0]))
            if tok in self.stop_ids and not ignore_stop:
                break
            out.append(tok)
            if len(out) == limit or pos + 1 >= self.max_seq_len:
                break
            logits = self._run("decode", self._run("embed", torch.tensor([[tok]], dtype=torch.long)),
                               torch.tensor([pos], dtype=torch.long))
            pos += 1
        self.last_stats = {"encode_ms": 1e3 * (t1 - t0), "prefill_ms": 1e3 * (t2 - t1), "prompt_tokens": prompt_tokens,
                           "decode_ms": 1e3 * (time.perf_counter() - t2), "new_tokens": len(out)}
        return out


class _OnnxVision:
    """The vision op's ONNX graphs as the three steps VisionRunner calls: image -> visual embeddings, token ids ->
    embeddings, (embeddings, start position) -> the last position's logits, with the decoder's KV cache kept here."""

    def __init__(self, manifest: Manifest, threads: int | None):
        import onnxruntime as ort

        from .onnx import AdapterFileError, check_adapter_file, check_external_data, check_files

        vo = manifest.vision.get("onnx") if manifest.vision else None
        if not vo:
            raise BundleError("the bundle's vision op has no ONNX graphs (export it with --format both --vision)")
        self.past = vo["past"]
        info = (manifest.raw.get("backends") or {}).get("onnx") or {}
        check_files(manifest, "vision op", [vo["encoder"], vo["embed"], vo["decoder"], *vo.get("data_files", []),
                                            vo["adapter_file"]])
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = int(threads)
        self.sessions = {}
        for step, f in (("image", vo["encoder"]), ("embed", vo["embed"]), ("decode", vo["decoder"])):
            check_external_data(manifest, f)  # weights only from files the bundle lists
            try:
                self.sessions[step] = ort.InferenceSession(str(manifest.path(f)), opts,
                                                           providers=["CPUExecutionProvider"])
            except Exception as e:
                raise BundleError(f"onnxruntime cannot load {f}: {one_line(e)}") from e
        path = manifest.path(vo["adapter_file"])
        check_adapter_file(path, info.get("lora_inputs") or {}, int(vo["graph_id"]),
                           (info.get("lora") or {}).get("dtype", "float32"), info.get("lora_blocks"))
        try:
            adapter = ort.LoraAdapter()
            adapter.Load(str(path))
        except Exception as e:
            raise AdapterFileError(f"onnxruntime refused adapter file {vo['adapter_file']}: {one_line(e)}") from e
        self.run_options = ort.RunOptions()
        self.run_options.add_active_adapter(adapter)
        self.adapter = adapter  # kept alive with the run options that point at it
        self.outputs = [o.name for o in self.sessions["decode"].get_outputs()]
        self.cache: dict[str, Any] = {}
        self.length = 0

    def methods(self) -> dict[str, Any]:
        return {"image": _Step(self.image), "embed": _Step(self.embed), "decode": _Step(self.decode)}

    def image(self, pixels: Any) -> Any:
        import torch

        return torch.from_numpy(self.sessions["image"].run(None, {"image": pixels.numpy()})[0])

    def embed(self, ids: Any) -> Any:
        import torch

        return torch.from_numpy(self.sessions["embed"].run(None, {"input_ids": ids.numpy()})[0])

    def decode(self, embeds: Any, start: Any) -> Any:
        import numpy as np
        import torch

        pos = int(start[0])
        if pos != 0 and pos != self.length:
            raise BundleError(f"the ONNX vision decoder's cache holds {self.length} positions, not {pos}")
        if pos == 0:  # a new prompt: an empty cache
            shape = (1, self.past["kv_heads"], 0, self.past["head_dim"])
            self.cache = {f"past_key_values.{i}.{kv}": np.zeros(shape, np.float32)
                          for i in range(self.past["layers"]) for kv in ("key", "value")}
            self.length = 0
        n = int(embeds.shape[1])
        feeds = {"inputs_embeds": embeds.numpy().astype(np.float32),
                 "attention_mask": np.ones((1, self.length + n), np.int64), **self.cache}
        outs = self.sessions["decode"].run(None, feeds, self.run_options)
        for name, value in zip(self.outputs, outs):
            if name.startswith("present."):
                self.cache["past_key_values." + name[len("present."):]] = value
        self.length += n
        logits = outs[self.outputs.index("logits")]
        return torch.from_numpy(np.ascontiguousarray(logits[:, -1, :]))


class _Step:
    """One step with the `execute([inputs]) -> [output]` of an ExecuTorch method."""

    def __init__(self, fn: Any):
        self.fn = fn

    def execute(self, inputs: list[Any]) -> list[Any]:
        return [self.fn(*inputs)]
