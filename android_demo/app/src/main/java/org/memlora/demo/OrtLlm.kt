package org.memlora.demo

import ai.onnxruntime.OnnxJavaType
import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OnnxTensorLike
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtLoraAdapter
import ai.onnxruntime.OrtSession
import ai.onnxruntime.TensorInfo
import java.io.File
import java.nio.FloatBuffer
import java.nio.LongBuffer
import org.memlora.core.BpeTokenizer
import org.memlora.core.BundleError
import org.memlora.core.ChatMessage
import org.memlora.core.DecodeLoop
import org.memlora.core.GenaiConfig
import org.memlora.core.Manifest
import org.memlora.core.MemoryCycle

/**
 * The ONNX backend: the bundle's ORT GenAI decoder graph run with the plain ONNX Runtime Java API
 * (`com.microsoft.onnxruntime:onnxruntime-android`), the decoding loop and tokenizer from :core.
 *
 * - Separate adapters: one [OrtSession] over the shared foundation graph (`foundation.onnx` + `.onnx.data`); each op's
 *   `<op>.onnx_adapter` is loaded once with [OrtLoraAdapter.create] and made active for that op's runs with
 *   [OrtSession.RunOptions.addActiveLoraAdapter] (the graph's LoRA inputs default to empty tensors, so an op without an
 *   adapter runs the base). Merged: one session per op graph. `none`: one session for all ops.
 * - Each op call is a fresh sequence: prefill of the prompt ids, then one token per step; the KV cache is the previous
 *   run's `present.*` outputs fed back as `past_key_values.*` without copying (the previous [OrtSession.Result] stays
 *   open until the next run has consumed it). Feed layout: [GenaiConfig].
 * - Tokens: [BpeTokenizer] (the bundle's tokenizer.json, the ids of Hugging Face tokenizers); decoding loop, stop ids
 *   and streamed pieces: [DecodeLoop] (runtimes/base.py's loop) — both JVM-tested against the Python side.
 * - Retrieval stays on ExecuTorch: the bundle's embedder is a .pte (EtEmbedder, Executorch.kt).
 */
class OrtLlm(private val m: Manifest, private val threads: Int = 0) : LlmBackend {
    override val name = "onnx"
    private val env: OrtEnvironment = OrtEnvironment.getEnvironment()
    private val graph = GenaiConfig.load(m.file(GENAI_CONFIG))
    val tokenizer: BpeTokenizer = BpeTokenizer.load(m.tokenizerFile())
    private val sessions = HashMap<String, OrtSession>()     // program file -> session
    private val adapters = HashMap<String, OrtLoraAdapter>() // op -> its adapter (separate strategy)
    override val loadMs = LinkedHashMap<String, Double>()   // op -> ms its graph (+ adapter) took to load
    override var lastRun: Map<String, Any?>? = null
        private set

    private fun entry(op: String): Map<String, Any?> {
        val b = m.op(op).backend(BACKEND)
        val program = b["program"] as? String
        if (program == null || !program.endsWith(".onnx"))
            throw BundleError("op '$op' has no ONNX program ($program); export with --format onnx or both")
        return b
    }

    override fun ensureLoaded(op: String): Double {
        if (loadMs.containsKey(op)) return 0.0
        val e = entry(op)
        val program = e["program"] as String
        val t0 = System.nanoTime()
        if (!sessions.containsKey(program)) {
            val opts = OrtSession.SessionOptions()
            opts.setOptimizationLevel(OrtSession.SessionOptions.OptLevel.ALL_OPT)
            if (threads > 0) opts.setIntraOpNumThreads(threads)
            // External data (<program>.data) is resolved next to the model path, as ORT GenAI does on the host.
            val session = env.createSession(m.file(program).path, opts)
            opts.close()
            checkGraph(program, session)
            sessions[program] = session
        }
        val adapterFile = e["adapter_file"] as? String
        if (!adapterFile.isNullOrEmpty() && !adapters.containsKey(op)) {
            adapters[op] = try {
                OrtLoraAdapter.create(m.file(adapterFile).absolutePath)
            } catch (err: Exception) {
                throw BundleError("onnxruntime refused adapter file $adapterFile: ${err.message}")
            }
        }
        val ms = (System.nanoTime() - t0) / 1e6
        loadMs[op] = ms
        return ms
    }

    /** The graph must take the inputs genai_config.json names, with float32 KV caches and logits. */
    private fun checkGraph(program: String, s: OrtSession) {
        val inputs = s.inputInfo
        for (name in graph.feedNames().values) if (name !in inputs) throw BundleError("$program has no input '$name' (genai_config.json names it)")
        for (l in 0 until graph.layers) {
            val t = inputs.getValue(graph.pastKey(l)).info as TensorInfo
            if (t.type != OnnxJavaType.FLOAT) throw BundleError("$program: KV cache is ${t.type}; the app feeds float32 (CPU export)")
        }
        if (graph.logits !in s.outputInfo) throw BundleError("$program has no output '${graph.logits}'")
    }

    override fun generate(op: String, messages: List<ChatMessage>, maxNewTokens: Int?, onText: MemoryCycle.TokenListener?): MemoryCycle.Generation {
        val ids = tokenizer.encode(m.renderPrompt(messages))
        val r = run(op, ids, DecodeLoop.Options.forOp(m, op, maxNewTokens), onText)
        return MemoryCycle.Generation(r.text, r.promptTokens.size, r.newTokens, r.stopReason)
    }

    override fun bench(op: String, prompt: String, newTokens: Int, ignoreStops: Boolean) {
        run(op, tokenizer.encode(prompt), DecodeLoop.Options.forOp(m, op, newTokens).apply { ignoreStopIds = ignoreStops }, null)
    }

    /** One op call over prompt ids; [lastRun] gets the profiler's run fields. */
    fun run(op: String, prompt: IntArray, opts: DecodeLoop.Options, onText: MemoryCycle.TokenListener?): DecodeLoop.Result {
        val loaded = ensureLoaded(op)
        val session = sessions.getValue(entry(op)["program"] as String)
        val runOptions = OrtSession.RunOptions()
        adapters[op]?.let { runOptions.addActiveLoraAdapter(it) }
        var past: OrtSession.Result? = null
        try {
            val step = DecodeLoop.Step { tokens, startPos ->
                val feeds = HashMap<String, OnnxTensorLike>()
                val owned = ArrayList<OnnxTensor>()
                fun longs(name: String, v: LongArray, shape: LongArray) {
                    val t = OnnxTensor.createTensor(env, LongBuffer.wrap(v), shape)
                    owned.add(t)
                    feeds[name] = t
                }
                val n = tokens.size
                longs(graph.inputIds, LongArray(n) { tokens[it].toLong() }, longArrayOf(1, n.toLong()))
                longs(graph.attentionMask, LongArray(startPos + n) { 1L }, longArrayOf(1, (startPos + n).toLong()))
                graph.positionIds?.let { longs(it, GenaiConfig.positions(startPos, n), longArrayOf(1, n.toLong())) }
                for (l in 0 until graph.layers) {
                    val prev = past
                    if (prev == null) {
                        if (startPos != 0) throw IllegalStateException("op $op: decoding must start at position 0, got $startPos")
                        for (name in listOf(graph.pastKey(l), graph.pastValue(l))) {
                            val empty = OnnxTensor.createTensor(env, FloatBuffer.allocate(0), graph.pastShape(0))
                            owned.add(empty)
                            feeds[name] = empty
                        }
                    } else {
                        val k = prev.get(graph.presentKey(l)).get() as OnnxTensor
                        val have = k.info.shape[2]
                        if (have != startPos.toLong()) throw IllegalStateException("op $op: the KV cache holds $have positions, step starts at $startPos")
                        feeds[graph.pastKey(l)] = k
                        feeds[graph.pastValue(l)] = prev.get(graph.presentValue(l)).get() as OnnxTensor
                    }
                }
                val result = try {
                    session.run(feeds, runOptions)
                } finally {
                    owned.forEach { it.close() }
                }
                past?.close() // its present.* were this run's past: consumed now
                past = result
                lastRowLogits(result.get(graph.logits).get() as OnnxTensor)
            }
            val r = DecodeLoop.run(step, tokenizer, prompt, opts, onText)
            lastRun = r.run(if (loaded > 0) loaded else loadMs[op] ?: 0.0)
            return r
        } finally {
            past?.close()
            runOptions.close()
        }
    }

    /** logits [1, rows, vocab] (all positions, or the builder's last-position-only output): the last row. */
    private fun lastRowLogits(t: OnnxTensor): FloatArray {
        val shape = t.info.shape
        val vocab = shape.last().toInt()
        val buf = t.floatBuffer // a copy of the tensor's data
        val rows = buf.remaining() / vocab
        val out = FloatArray(vocab)
        buf.position((rows - 1) * vocab)
        buf.get(out)
        return out
    }

    override fun close() {
        for (a in adapters.values) a.close()
        adapters.clear()
        for (s in sessions.values) s.close()
        sessions.clear()
    }

    companion object {
        const val BACKEND = "onnx"
        const val GENAI_CONFIG = "genai_config.json"
    }
}
