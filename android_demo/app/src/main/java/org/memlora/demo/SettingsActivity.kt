package org.memlora.demo

import android.app.Activity
import android.os.Bundle
import android.widget.ArrayAdapter
import android.widget.Button
import android.widget.CheckBox
import android.widget.EditText
import android.widget.Spinner
import android.widget.TextView
import java.io.File
import org.memlora.core.Manifest

/** Bundle directory, backend and adapter strategy; shows what the bundle holds and which runtimes the app links. */
class SettingsActivity : Activity() {
    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_settings)
        val app = application as MemloraApp
        val s = app.settings
        val bundle = findViewById<EditText>(R.id.bundle)
        val backend = findViewById<Spinner>(R.id.backend)
        val strategy = findViewById<Spinner>(R.id.strategy)
        val remember = findViewById<CheckBox>(R.id.remember_first)
        val info = findViewById<TextView>(R.id.info)
        bundle.setText(s.bundlePath)
        backend.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_dropdown_item, Settings.BACKENDS)
        backend.setSelection(Settings.BACKENDS.indexOf(s.backend).coerceAtLeast(0))
        strategy.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_dropdown_item, Settings.STRATEGIES)
        strategy.setSelection(Settings.STRATEGIES.indexOf(s.strategy).coerceAtLeast(0))
        remember.isChecked = s.rememberFirst
        info.text = describe(s.bundlePath, s.strategy)
        findViewById<Button>(R.id.save).setOnClickListener {
            s.bundlePath = bundle.text.toString()
            s.backend = backend.selectedItem as String
            s.strategy = strategy.selectedItem as String
            s.rememberFirst = remember.isChecked
            app.reset()
            info.text = describe(s.bundlePath, s.strategy)
        }
    }

    private fun describe(path: String, strategy: String): String {
        val linked = "app links executorch-android ${BuildConfig.EXECUTORCH_VERSION}, onnxruntime-android ${BuildConfig.ONNXRUNTIME_VERSION}"
        return try {
            val dir: File = Engine.resolveBundle(path, strategy)
            val m = Manifest.load(dir, false)
            val model = m.raw["model"] as Map<*, *>
            "$dir: ${model["name"]}, ${m.strategy()} adapters, ${m.format()}, " +
                "${(m.raw["quantization"] as Map<*, *>)["scheme"]}, max_seq_len ${m.maxSeqLen()}, ops ${m.ops.keys}, " +
                "embedder ${if (m.embedder() != null) "yes" else "no"}, exported with executorch ${m.versions()["executorch"]}\n$linked"
        } catch (e: Exception) {
            "${e.message}\n$linked"
        }
    }
}
