package org.memlora.demo

import android.content.Context

/** What the settings screen edits; stored in SharedPreferences. */
class Settings(context: Context) {
    private val prefs = context.getSharedPreferences("memlora", Context.MODE_PRIVATE)

    var bundlePath: String
        get() = prefs.getString("bundle", DEFAULT_BUNDLE)!!
        set(v) = prefs.edit().putString("bundle", v.trim()).apply()

    /** "executorch" | "onnx" */
    var backend: String
        get() = prefs.getString("backend", "executorch")!!
        set(v) = prefs.edit().putString("backend", v).apply()

    /** "bundle" (whatever the bundle holds) | "separate" | "merged" | "none": with a choice other than "bundle", the
     *  bundle directory may hold one sub-directory per strategy (<dir>/separate, <dir>/merged, ...). */
    var strategy: String
        get() = prefs.getString("strategy", "bundle")!!
        set(v) = prefs.edit().putString("strategy", v).apply()

    var rememberFirst: Boolean
        get() = prefs.getBoolean("remember_first", true)
        set(v) = prefs.edit().putBoolean("remember_first", v).apply()

    companion object {
        const val DEFAULT_BUNDLE = "/data/local/tmp/memlora"
        val BACKENDS = listOf("executorch", "onnx")
        val STRATEGIES = listOf("bundle", "separate", "merged", "none")
    }
}
