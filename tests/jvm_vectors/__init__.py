"""Shared test vectors for the Android app's JVM module (android_demo/core): `python -m tests.jvm_vectors OUT_DIR`.

Every expected value here is produced by CALLING the Python implementation the phone must match — never written by
hand: runtimes.base.Runtime.apply_chat_template (the bundle's chat format), runtimes.manifest.load_manifest,
runtimes.memory.parse / prompts / store / pipeline, json's raw_decode (which the parser relies on), and the
embedder's WordPiece tokenizer. The JVM tests (`./build.sh android-test`) read these files and assert the Java code
gives the same results: the same behaviour (prompts, token ids, parsed results, store states, accepted or refused);
Python's error messages are recorded for people, not compared.

Files written (atomically: a temp dir renamed into place):
  meta.json         versions, what was recorded and from which bundle
  text.json         Python's str.isspace table
  json.json         json.JSONDecoder.raw_decode on model-output-like documents (value + end, or refused and whether
                    parse.py calls it truncated)
  parse.json        raw model outputs -> parse_extract / parse_update results or refusals (with hostile
                    ones: over-long, too deep, too many items, long integers / texts / ids, at and past each bound)
  format.json       turns / facts / memories / dates formatting and the op messages from the bundle's prompts
  chat.json         messages framed by the bundle's chat format (and the plain one): prompt text, token ids, and
                    what the model's Jinja template gives
  manifest.json     load_manifest on a real exported bundle and on variants of it (under manifests/): what it
                    reads, or the field a refusal names
  wordpiece.json    the retrieval embedder's tokenizer: texts -> token ids
  store.json        update events applied to a store: rows, history and results after every step (stores/); files
                    that are or are not memory stores opened (stores/open/): refused with which message, or stamped
  ranking.json      cosine search over real all-MiniLM-L6-v2 embeddings (stores/ranking.sqlite)
  pipeline.json     MemoryPipeline runs with recorded model outputs replayed: every op call, the final store, answers
  bench.json        the profiler's reading (runtimes.profiler.adb.parse_observer) of an ExecuTorch runner stats line
  bpe.json          the LM's byte-level BPE tokenizer (bpe/*.json: the bundle's and two variants): encode / decode cases
  loop.json         runtimes.base.Runtime.stream over scripted steps: streamed pieces, stop reasons, the forward calls

The real bundle: `--bundle DIR` (e.g. the default export ./memlora_bundle) or else a tiny random-weight llama with the
SmolLM2 tokenizer exported once by the real exporter (fp32, one shared program) and cached under
$MEMLORA_CACHE/android-vectors, keyed by the exporter's and runtime's source files.

Test tooling, outside the runtime package (it runs the exporter): common.py (helpers), text.py (isspace, JSON, parse,
WordPiece), prompts.py (formatting, op messages, chat format), store.py (store, ranking, pipeline), runtime.py (runner
stats, BPE, the decoding loop), bundle.py (the tiny export, manifests), write.py (the files, the command line).
"""

from __future__ import annotations

from .bundle import tiny_bundle
from .common import _embed_table
from .write import main, write

__all__ = ["_embed_table", "main", "tiny_bundle", "write"]
