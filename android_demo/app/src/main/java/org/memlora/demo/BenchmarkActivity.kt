package org.memlora.demo

import android.app.Activity
import android.os.Build
import android.os.Bundle
import android.util.Log
import android.widget.TextView
import java.io.File
import org.memlora.core.Bench
import org.memlora.core.BundleError
import org.memlora.core.Manifest

/**
 * memlora-profile's entry point on the phone (runtimes/profiler/adb.py):
 *   adb shell am start -W -n org.memlora.demo/.BenchmarkActivity --es bundle /data/local/tmp/memlora \
 *       --es job /data/local/tmp/memlora/profile_job.json --es out <result.json>
 * runs the job's workload (memlora.profile.job v1: per op its rendered chat messages and fixed new-token count,
 * warm-up, repeats, rounds) through the same backend path the chat uses, and writes memlora.profile.device v1.
 * Backend: `--es backend executorch|onnx`, by default ONNX Runtime for ONNX-only bundles and ExecuTorch otherwise. `out` must be writable by the app: an app cannot write /data/local/tmp, so a path there
 * falls back to the app's external files directory (/sdcard/Android/data/org.memlora.demo/files/<name>), which adb
 * can pull; the path written is logged as "MEMLORA_BENCH_DONE <path>" (or "MEMLORA_BENCH_FAILED <reason>").
 * Two limits of LlmModule, recorded in the result: the thread count is ExecuTorch's (performant cores - 1), not the
 * job's; and generation stops at an end-of-sequence id (no ignore-EOS switch), so a run may decode fewer tokens.
 * The ONNX backend ([OrtLlm]) runs its own decoding loop: it uses the job's thread count and, with the job's
 * stop_tokens "ignored", decodes exactly new_tokens tokens.
 */
class BenchmarkActivity : Activity() {
    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val view = TextView(this).apply { text = "memlora benchmark running…"; setPadding(32, 32, 32, 32) }
        setContentView(view)
        val bundle = intent.getStringExtra("bundle") ?: Settings.DEFAULT_BUNDLE
        val jobPath = intent.getStringExtra("job") ?: "$bundle/profile_job.json"
        val out = intent.getStringExtra("out") ?: "profile_result.json"
        val backend = intent.getStringExtra("backend")
        Thread({
            val msg = try {
                val path = run(File(bundle), File(jobPath), out, backend) { p -> runOnUiThread { view.text = p } }
                Log.i(TAG, "MEMLORA_BENCH_DONE $path")
                "done: $path"
            } catch (e: Throwable) {
                Log.e(TAG, "MEMLORA_BENCH_FAILED ${e.message}", e)
                "failed: ${e.message}"
            }
            runOnUiThread { view.text = msg; finish() }
        }, "memlora-bench").start()
    }

    private fun rssPeakMb(): Double {
        val line = File("/proc/self/status").readLines().firstOrNull { it.startsWith("VmHWM:") } ?: return 0.0
        return line.filter { it.isDigit() }.toDouble() / 1024.0
    }

    private fun run(bundle: File, jobFile: File, out: String, backendArg: String?, progress: (String) -> Unit): String {
        val m = Manifest.load(bundle, false)
        val job = Bench.parseJob(jobFile.readText())
        val backend = backendArg ?: Engine.defaultBackend(m)
        val llm = Engine.openLlm(m, backend, job.threads, (application as MemloraApp).executorch)
        val ignoreStops = job.stopTokens == "ignored"
        val ops = LinkedHashMap<String, Any?>()
        try {
            for ((op, oj) in job.ops) {
                if (!m.ops.containsKey(op)) throw BundleError("the job names op '$op', which the bundle does not have")
                val rounds = ArrayList<Any?>()
                for (round in 0 until job.rounds) {
                    val loadMs = if (round == 0) llm.ensureLoaded(op) else llm.loadMs[op]
                    val runs = ArrayList<Any?>()
                    for (item in oj.items) {
                        val prompt = m.renderPrompt(item.messages)
                        for (rep in -job.warmup until job.repeats) {
                            progress("$op round ${round + 1}/${job.rounds} ${item.sampleId} ${if (rep < 0) "warm-up" else "run ${rep + 1}"}")
                            llm.bench(op, prompt, oj.newTokens, ignoreStops)
                            if (rep < 0) continue
                            val r = LinkedHashMap(llm.lastRun ?: throw IllegalStateException("the runner reported no stats"))
                            r.remove("load_ms")
                            r["sample_id"] = item.sampleId
                            runs.add(r)
                        }
                    }
                    rounds.add(linkedMapOf("runs" to runs, "load_ms" to loadMs, "rss_mb" to mapOf("peak" to rssPeakMb())))
                }
                @Suppress("UNCHECKED_CAST")
                val first = rounds[0] as Map<String, Any?>
                ops[op] = linkedMapOf("load_ms" to first["load_ms"], "rss_mb" to first["rss_mb"], "runs" to first["runs"], "rounds" to rounds,
                    "bytes_on_disk" to m.opBytes(op, backend))
            }
        } finally {
            llm.close()
        }
        val device = linkedMapOf<String, Any?>(
            "model" to Build.MODEL, "manufacturer" to Build.MANUFACTURER, "soc" to (if (Build.VERSION.SDK_INT >= 31) Build.SOC_MODEL else null),
            "abi" to Build.SUPPORTED_ABIS.firstOrNull(), "android_sdk" to Build.VERSION.SDK_INT.toLong(),
            "cpu_count" to Runtime.getRuntime().availableProcessors().toLong(),
            "runtime" to if (llm is OrtLlm) "onnxruntime-android ${BuildConfig.ONNXRUNTIME_VERSION} (plain ORT Java API, memlora decode loop)"
                else "executorch-android ${BuildConfig.EXECUTORCH_VERSION} LlmModule",
            "threads" to if (llm is OrtLlm) (if (job.threads > 0) job.threads.toLong() else "ONNX Runtime default")
                else "ExecuTorch default (performant cores - 1); the job asked ${job.threads}",
            "stop_tokens" to if (llm is OrtLlm) job.stopTokens
                else "honoured (LlmModule has no ignore-EOS switch); the job asked '${job.stopTokens}'")
        val text = Bench.deviceResult(device, ops, null)
        val target = File(out)
        val written = try {
            if (!target.isAbsolute) throw SecurityException("relative path")
            target.writeText(text)
            target
        } catch (e: Exception) {
            val dir = getExternalFilesDir(null) ?: filesDir
            File(dir, target.name).also { it.writeText(text) }
        }
        return written.path
    }

    companion object {
        const val TAG = "memlora"
    }
}
