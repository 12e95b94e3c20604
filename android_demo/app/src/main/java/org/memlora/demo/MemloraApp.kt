package org.memlora.demo

import android.app.Application
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors
import java.util.concurrent.Future

/**
 * Holds the engine (bundle + models + store) and the one worker thread every model call and store access runs on:
 * the models, the embedder and the SQLite connection are used from that thread only, never from the UI thread.
 * The application class the manifest names is ExecutorchApp (Executorch.kt), which adds [executorch].
 */
abstract class MemloraApp : Application() {
    /** The ExecuTorch language model and embedder (Executorch.kt). */
    abstract val executorch: ExecutorchBackends

    val worker: ExecutorService = Executors.newSingleThreadExecutor { r -> Thread(r, "memlora-engine") }
    private var engine: Engine? = null
    lateinit var settings: Settings
        private set

    override fun onCreate() {
        super.onCreate()
        settings = Settings(this)
    }

    /** The engine for the current settings, opened on first use (call from the worker thread). */
    @Synchronized
    fun engine(): Engine = engine ?: Engine.open(this, settings, executorch).also { engine = it }

    /** Settings changed: close the engine on the worker thread; the next use reopens it. */
    fun reset(): Future<*> = worker.submit {
        synchronized(this) {
            engine?.close()
            engine = null
        }
    }
}
