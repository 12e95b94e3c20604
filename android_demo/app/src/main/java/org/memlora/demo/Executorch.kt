package org.memlora.demo

import java.io.File
import org.memlora.core.Bench
import org.memlora.core.BundleError
import org.memlora.core.ChatMessage
import org.memlora.core.Manifest
import org.memlora.core.MemoryCycle
import org.memlora.core.WordPiece
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor
import org.pytorch.executorch.extension.llm.LlmCallback
import org.pytorch.executorch.extension.llm.LlmModule

// Everything in the app that calls ExecuTorch's Java API (org.pytorch.executorch.*, executorch-android), kept in this
// one file behind ExecutorchBackends / LlmBackend / EmbedderBackend (Engine.kt). `./build.sh android-check` compiles
// every other Kotlin file against the Android API and the real ONNX Runtime classes, but not this one: no registry
// it reaches has executorch-android. Only the Gradle build (`./build.sh android`) compiles it; keep it small.

/** The application class the manifest names: MemloraApp with the ExecuTorch backends. */
class ExecutorchApp : MemloraApp() {
    override val executorch: ExecutorchBackends = object : ExecutorchBackends {
        override fun llm(m: Manifest): LlmBackend = EtLlm(m)
        override fun embedder(m: Manifest): EmbedderBackend = EtEmbedder(m)
        // An ONNX-only bundle's vision op (--format onnx) has no ExecuTorch program: none here (Engine says so).
        override fun vision(m: Manifest): VisionBackend? = m.vision()?.takeIf { it.program != null }?.let { EtVision(m, it) }
    }
}

/**
 * The ExecuTorch backend: one LlmModule (ExecuTorch's LLM runner: tokenizer, KV-cache prefill + decode, sampling)
 * per program of the bundle. A separate-adapter bundle has one small .pte per op over the shared foundation .ptd, so
 * each op's module is created with that .ptd as its data file; a merged or adapter-less bundle has one program per op
 * or one for all. Prompts are rendered by :core (the manifest's template + chat template), exactly as in Python.
 *
 * LlmModule's runner needs the LLM metadata methods (get_max_seq_len, get_eos_ids, ...) in the .pte; a program
 * without them fails at load with ExecuTorch's own message, which is shown as is.
 */
class EtLlm(private val m: Manifest) : LlmBackend {
    override val name = "executorch"
    private val modules = HashMap<List<String>, LlmModule>() // program + data files -> module (a separate-adapter bundle's ops share the program, not the LoRA data)
    override val loadMs = LinkedHashMap<String, Double>() // op -> ms its program took to load (0 when shared)
    override var lastRun: Map<String, Any?>? = null
        private set

    private fun files(op: String): Pair<String, List<String>> {
        val b = m.op(op).backend("executorch")
        val program = b["program"] as String
        if (!program.endsWith(".pte")) throw BundleError("op '$op' has no ExecuTorch program (${program}); export with --format executorch or both")
        @Suppress("UNCHECKED_CAST")
        val data = (b["data_files"] as? List<Any?>).orEmpty().map { m.file(it as String).path }
        return program to data
    }

    override fun ensureLoaded(op: String): Double {
        val (program, data) = files(op)
        val key = listOf(program) + data
        if (modules.containsKey(key)) return 0.0
        val t0 = System.nanoTime()
        val module = LlmModule(LlmModule.MODEL_TYPE_TEXT, m.file(program).path, m.tokenizerFile().path, 0.0f, data, 0, 0)
        module.load()
        modules[key] = module
        val ms = (System.nanoTime() - t0) / 1e6
        loadMs[op] = ms
        return ms
    }

    /**
     * Greedy (or the op's temperature) generation of the op's answer. [maxNewTokens] (default: the manifest's) is
     * enforced by stopping the runner after that many streamed pieces; the runner stops earlier at an end-of-sequence id.
     */
    override fun generate(op: String, messages: List<ChatMessage>, maxNewTokens: Int?, onText: MemoryCycle.TokenListener?): MemoryCycle.Generation =
        generate(op, m.renderPrompt(messages), maxNewTokens ?: m.op(op).maxNewTokens(), onText)

    /** LlmModule has no ignore-EOS switch: [ignoreStops] cannot be honoured (the result records it). */
    override fun bench(op: String, prompt: String, newTokens: Int, ignoreStops: Boolean) {
        generate(op, prompt, newTokens, null)
    }

    fun generate(op: String, prompt: String, maxNew: Int, onText: MemoryCycle.TokenListener?): MemoryCycle.Generation {
        ensureLoaded(op)
        val module = files(op).let { (p, d) -> modules.getValue(listOf(p) + d) }
        val temperature = m.op(op).gen("temperature", 0.0).toFloat()
        val stream = Stream(module, m.eosToken(), maxNew, onText)
        module.resetContext() // each op call is a fresh conversation (the runner keeps its KV position otherwise)
        module.generate(prompt, m.maxSeqLen(), stream, false, temperature, 0, 0)
        stream.error?.let { throw IllegalStateException("op $op: $it") }
        val run = stream.stats?.let { Bench.run(it) }
        lastRun = run
        val promptTokens = (run?.get("prompt_tokens") as? Long)?.toInt() ?: 0
        val newTokens = (run?.get("new_tokens") as? Long)?.toInt() ?: stream.pieces
        return MemoryCycle.Generation(stream.text.toString(), promptTokens, newTokens, stream.stopReason())
    }

    override fun close() {
        for (mod in modules.values) mod.close()
        modules.clear()
    }
}

/**
 * LlmModule's streamed pieces -> the answer: forwards each piece, ends the answer where the end-of-turn token shows up
 * as text, and stops the runner after [maxNew] pieces (LlmModule has no max-new-tokens of its own).
 */
private class Stream(
    private val module: LlmModule,
    eosToken: String,
    private val maxNew: Int,
    private val onText: MemoryCycle.TokenListener?,
) : LlmCallback {
    private val stopText = eosToken.takeIf { it.isNotEmpty() }
    val text = StringBuilder()
    var pieces = 0
        private set
    var stats: String? = null
        private set
    var error: String? = null
        private set
    private var stopped = false

    override fun onResult(result: String) {
        if (stopped) return
        pieces++
        var piece = result
        val cut = if (stopText != null) (text.toString() + piece).indexOf(stopText) else -1
        if (cut >= 0) { // the end-of-turn token came out as text: end the answer there
            piece = (text.toString() + piece).substring(text.length, cut)
            stopped = true
        }
        text.append(piece)
        if (piece.isNotEmpty()) onText?.onText(piece)
        if (stopped || pieces >= maxNew) {
            stopped = true
            module.stop()
        }
    }

    override fun onStats(stats: String) {
        this.stats = stats
    }

    override fun onError(errorCode: Int, message: String) {
        error = "ExecuTorch error $errorCode: $message"
    }

    fun stopReason(): String = if (pieces >= maxNew) "max_new_tokens" else "stop_token"
}

/**
 * The bundle's retrieval embedder (all-MiniLM-L6-v2 as embedder.pte, mean pooling + L2 norm inside the program) run by
 * ExecuTorch's Module API: WordPiece ids from :core (the same ids as the Python tokenizer), inputs input_ids and
 * attention_mask int64 [1, seq], output float32 [1, dim].
 */
class EtEmbedder(m: Manifest) : EmbedderBackend {
    private val entry = m.embedder() ?: throw BundleError(
        "the bundle has no embedder: export it with --embedder (the default for --target android)")
    private val tokenizer = WordPiece.load(m.file(entry["tokenizer"] as String), (entry["max_len"] as Number).toInt())
    private val dim = (entry["dim"] as Number).toInt()
    private val module: Module = Module.load(m.file(entry["program"] as String).path)

    override fun embed(texts: List<String>): Array<FloatArray> = Array(texts.size) { i ->
        val ids = tokenizer.encode(texts[i])
        val shape = longArrayOf(1, ids.size.toLong())
        val out = module.forward(EValue.from(Tensor.fromBlob(ids, shape)), EValue.from(Tensor.fromBlob(LongArray(ids.size) { 1L }, shape)))
        val v = out[0].toTensor().dataAsFloatArray
        if (v.size != dim) throw IllegalStateException("embedder returned ${v.size} values, the manifest says $dim")
        v
    }

    override fun close() = module.close()
}

/**
 * MemLoRA-V's vision op: the bundle's vision.pte (methods vision_encoder / token_embedding / text_decoder) over the
 * text ops' foundation.ptd + vqa.lora.ptd, run by ExecuTorch's multimodal runner through LlmModule, in the order
 * runtimes/vision.py runs it: the prompt before the image, the image (uint8 CHW RGB at the manifest's size; the program
 * normalises it), then the prompt after it with the question, and greedy decoding.
 */
class EtVision(private val m: Manifest, private val v: Manifest.Vision) : VisionBackend {
    private val module = LlmModule(LlmModule.MODEL_TYPE_MULTIMODAL, m.file(v.program).path, m.tokenizerFile().path, 0.0f,
        v.dataFiles.map { m.file(it).path }, 0, 0).also { it.load() }

    override fun answer(png: ByteArray, question: String, maxNewTokens: Int?, onText: MemoryCycle.TokenListener?): MemoryCycle.Generation {
        val maxNew = maxNewTokens ?: v.maxNewTokens
        val pixels = Images.chwPixels(png, v.imageSize)
        val stream = Stream(module, m.eosToken(), maxNew, onText)
        module.resetContext()
        module.prefillPrompt(v.before)
        module.prefillImages(pixels, v.imageSize, v.imageSize, 3)
        module.generate(v.after(question), m.maxSeqLen(), stream, false, 0.0f, 0, 0)
        stream.error?.let { throw IllegalStateException("vision op: $it") }
        return MemoryCycle.Generation(v.finalAnswer(stream.text.toString()), 0, stream.pieces, stream.stopReason())
    }

    override fun close() = module.close()
}
