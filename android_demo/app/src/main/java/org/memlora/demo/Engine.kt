package org.memlora.demo

import android.content.Context
import java.io.Closeable
import java.io.File
import java.time.LocalDateTime
import java.time.format.DateTimeFormatter
import java.util.Locale
import org.memlora.core.BundleError
import org.memlora.core.Manifest
import org.memlora.core.MemoryCycle
import org.memlora.core.MemoryFormat
import org.memlora.core.MemoryStore
import org.memlora.core.Turn

/** A language-model backend over a bundle: MemoryCycle's Llm plus load bookkeeping. */
interface LlmBackend : MemoryCycle.Llm, Closeable {
    val name: String
    /** Loads the op's program if it is not loaded yet; returns the milliseconds the load took (0 when loaded). */
    fun ensureLoaded(op: String): Double
    /** op -> milliseconds its program took to load (0 when it shares one loaded before). */
    val loadMs: Map<String, Double>
    /** The runner's figures for the last generate() or bench() (the profiler's run fields), or null. */
    val lastRun: Map<String, Any?>?
    /** One benchmark call of [op] on a rendered [prompt], [newTokens] at most; [ignoreStops]: decode past stop ids
     *  where the backend can (ONNX; ExecuTorch's runner always stops at end-of-sequence). */
    fun bench(op: String, prompt: String, newTokens: Int, ignoreStops: Boolean)
}

/** The retrieval embedder. */
interface EmbedderBackend : MemoryCycle.Embedder, Closeable

/** MemLoRA-V's vision op (the bundle's vision.pte): answers a question about a stored image from its pixels. */
interface VisionBackend : MemoryCycle.Vision, Closeable

/**
 * The ExecuTorch backends, made by Executorch.kt: the only Kotlin file that calls org.pytorch.executorch.*, and so
 * the only one `./build.sh android-check` cannot compile (no registry it reaches has executorch-android's classes).
 * Everything else reaches ExecuTorch through this interface.
 */
interface ExecutorchBackends {
    fun llm(m: Manifest): LlmBackend
    fun embedder(m: Manifest): EmbedderBackend
    /** The bundle's vision op (ExecuTorch's multimodal runner), or null when the bundle has none. */
    fun vision(m: Manifest): VisionBackend?
}

/**
 * The bundle, its models, the memory store and the memory cycle of :core for one set of settings. Everything here
 * runs on MemloraApp's worker thread.
 */
class Engine private constructor(
    val manifest: Manifest,
    val llm: LlmBackend,
    val embedder: EmbedderBackend,
    val store: MemoryStore,
    val cycle: MemoryCycle,
    val vision: VisionBackend?,
) : Closeable {
    var turns = 0
        private set

    /** One user message: remember it (extract -> update, one transaction) and answer it (retrieve -> generate). */
    fun handle(text: String, rememberFirst: Boolean, status: (String) -> Unit, onText: (String) -> Unit): MemoryCycle.Answer {
        var answer: MemoryCycle.Answer? = null
        val remember = {
            status("remembering…")
            val r = cycle.addTurns(listOf(Turn(SPEAKER, text, null, "m${++turns}")), sessionDate())
            val added = r.applied.sumOf { it.added.size }
            val updated = r.applied.sumOf { it.updated.size }
            val deleted = r.applied.sumOf { it.deleted.size }
            val failed = r.calls.filter { it.ok == false }.joinToString { "${it.op}: ${it.error}" }
            status("${r.facts.size} facts; +$added ~$updated -$deleted memories" + if (failed.isNotEmpty()) " ($failed)" else "")
        }
        if (rememberFirst) remember()
        status(if (rememberFirst) "answering…" else "answering (memories update next)…")
        answer = cycle.answer(text, null) { piece -> onText(piece) }
        if (!rememberFirst) remember()
        return answer
    }

    /**
     * A shared image (PNG bytes) with the message sent with it: kept in the store with that text (the vision op
     * answers later questions about it from the pixels), then the message is remembered as "... [shares a photo]".
     */
    fun shareImage(png: ByteArray, text: String, status: (String) -> Unit) {
        status("keeping the photo…")
        val turn = cycle.shareImage(png, Turn(SPEAKER, text, null, "m${++turns}"), sessionDate())
        val r = cycle.addTurns(listOf(turn), sessionDate())
        val added = r.applied.sumOf { it.added.size }
        status("photo kept (${store.imageCount(OWNER)} in all); ${r.facts.size} facts, +$added memories" +
                when {
                    vision != null -> ""
                    manifest.vision() != null -> " · this bundle's vision op is ONNX graphs only; the app runs it with ExecuTorch: " +
                        "export with --format both --vision to ask about photos"
                    else -> " · this bundle has no vision op: export it with --vision to ask about photos"
                })
    }

    override fun close() {
        vision?.close()
        llm.close()
        embedder.close()
        store.close()
    }

    companion object {
        const val SPEAKER = "User"
        const val OWNER = "user"
        private val LOCOMO_DATE = DateTimeFormatter.ofPattern("h:mm a 'on' d MMMM, yyyy", Locale.ENGLISH)

        /** The session date as LoCoMo writes it ("1:56 pm on 8 May, 2023"), the form the adapters were trained on. */
        fun sessionDate(): String = LOCOMO_DATE.format(LocalDateTime.now()).replace("AM", "am").replace("PM", "pm")

        /** <dir>/<strategy> when the settings name a strategy and that sub-bundle exists, else <dir>. */
        fun resolveBundle(dir: String, strategy: String): File {
            val root = File(dir)
            if (strategy != "bundle" && File(root, "$strategy/${Manifest.MANIFEST}").isFile) return File(root, strategy)
            return root
        }

        fun open(context: Context, s: Settings, et: ExecutorchBackends): Engine {
            val dir = resolveBundle(s.bundlePath, s.strategy)
            // verify=false: sizes only would be cheap, but sha256 of a few hundred MB on a phone takes seconds; the
            // manifest's structure, files and versions are still checked. Integrity is checked by memlora-export --install.
            val m = Manifest.load(dir, false)
            if (s.strategy != "bundle" && m.strategy() != s.strategy)
                throw BundleError("the bundle at $dir is '${m.strategy()}', the settings ask for '${s.strategy}' " +
                        "(push that export to ${s.bundlePath}/${s.strategy} or choose 'bundle')")
            for (f in m.files().keys) m.file(f) // listed, plain, inside the bundle, a regular file
            val llm = openLlm(m, s.backend, 0, et)
            val embedder = try {
                // The retrieval embedder is an ExecuTorch program in every bundle (ONNX ones included): same version rule.
                if (s.backend != "executorch" && m.embedder() != null) m.checkRuntimeVersion("executorch", BuildConfig.EXECUTORCH_VERSION)
                et.embedder(m)
            } catch (e: Exception) {
                llm.close()
                throw e
            }
            // The vision op runs on ExecuTorch (the bundle's vision.pte over the text ops' foundation), whatever the text backend.
            val vision = try {
                if (m.vision()?.program != null && s.backend != "executorch") m.checkRuntimeVersion("executorch", BuildConfig.EXECUTORCH_VERSION)
                et.vision(m)
            } catch (e: Exception) {
                llm.close()
                embedder.close()
                throw e
            }
            val store = MemoryStore(File(context.filesDir, "memories.sqlite").path)
            val cycle = MemoryCycle(llm, embedder, store, OWNER, MemoryCycle.Config(), MemoryCycle.templatesOf(m))
            cycle.vision = vision
            return Engine(m, llm, embedder, store, cycle, vision)
        }

        /** The language model of [backend] over the bundle, after checking its runtime version (threads: ONNX only; 0 = ORT's default). */
        fun openLlm(m: Manifest, backend: String, threads: Int, et: ExecutorchBackends): LlmBackend = when (backend) {
            "executorch" -> {
                m.checkRuntimeVersion("executorch", BuildConfig.EXECUTORCH_VERSION)
                et.llm(m)
            }
            "onnx" -> {
                if (m.format() == "executorch")
                    throw BundleError("the bundle at ${m.root} holds ExecuTorch programs only: export it with --format onnx " +
                            "(or both), or choose the executorch backend")
                m.checkRuntimeVersion("onnxruntime", BuildConfig.ONNXRUNTIME_VERSION)
                OrtLlm(m, threads)
            }
            else -> throw BundleError("unknown backend '$backend' (executorch or onnx)")
        }

        /** The backend a bundle runs on when none is asked for: ONNX-only bundles on ONNX Runtime, others on ExecuTorch. */
        fun defaultBackend(m: Manifest): String = if (m.format() == "onnx") "onnx" else "executorch"

        fun now(): String = MemoryFormat.now()
    }
}
