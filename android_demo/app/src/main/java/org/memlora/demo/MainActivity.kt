package org.memlora.demo

import android.app.Activity
import android.content.Intent
import android.os.Bundle
import android.view.Menu
import android.view.MenuItem
import android.widget.ArrayAdapter
import android.widget.Button
import android.widget.EditText
import android.widget.ListView
import android.widget.TextView

/**
 * Chat: each message is remembered (extract -> update) and answered (retrieve -> generate, streamed). "Photo" attaches
 * an image (picked with the system's file picker) to the message: it is kept in the store with the message, and a
 * later question about it is answered by the bundle's vision op from its pixels (MemLoRA-V).
 */
class MainActivity : Activity() {
    private val lines = ArrayList<String>()
    private lateinit var adapter: ArrayAdapter<String>
    private lateinit var status: TextView
    private lateinit var send: Button
    private lateinit var input: EditText

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        status = findViewById(R.id.status)
        send = findViewById(R.id.send)
        input = findViewById(R.id.input)
        findViewById<Button>(R.id.attach).setOnClickListener {
            val pick = Intent(Intent.ACTION_GET_CONTENT).setType("image/*").addCategory(Intent.CATEGORY_OPENABLE)
            startActivityForResult(Intent.createChooser(pick, getString(R.string.attach)), PICK_IMAGE)
        }
        adapter = ArrayAdapter(this, android.R.layout.simple_list_item_1, lines)
        findViewById<ListView>(R.id.messages).adapter = adapter
        val app = application as MemloraApp
        status.text = "bundle: ${app.settings.bundlePath} (${app.settings.backend})"
        send.setOnClickListener {
            val text = input.text.toString().trim()
            if (text.isEmpty()) return@setOnClickListener
            input.setText("")
            lines.add("you: $text")
            lines.add("memlora: …")
            val row = lines.size - 1
            adapter.notifyDataSetChanged()
            send.isEnabled = false
            val streamed = StringBuilder()
            app.worker.submit {
                try {
                    val engine = app.engine()
                    val answer = engine.handle(text, app.settings.rememberFirst,
                        status = { s -> runOnUiThread { status.text = s } },
                        onText = { piece ->
                            streamed.append(piece)
                            val now = streamed.toString()
                            runOnUiThread { lines[row] = "memlora: $now"; adapter.notifyDataSetChanged() }
                        })
                    val shown = answer.text.ifEmpty { "(no answer)" }
                    val info = answer.image?.let { "answered from the photo shared with \"${it.context}\" in ${answer.call.ms.toInt()} ms" }
                        ?: "answered from ${answer.memories.size} memories in ${answer.call.ms.toInt()} ms"
                    runOnUiThread {
                        lines[row] = "memlora: $shown"
                        adapter.notifyDataSetChanged()
                        status.text = "${status.text} · $info"
                    }
                } catch (e: Throwable) {
                    runOnUiThread {
                        lines[row] = "memlora: error: ${e.message ?: e.javaClass.simpleName}"
                        adapter.notifyDataSetChanged()
                    }
                } finally {
                    runOnUiThread { send.isEnabled = true }
                }
            }
        }
    }

    @Deprecated("Activity's own result callback; this app uses the platform Activity, not androidx")
    override fun onActivityResult(requestCode: Int, resultCode: Int, data: Intent?) {
        super.onActivityResult(requestCode, resultCode, data)
        val uri = data?.data
        if (requestCode != PICK_IMAGE || resultCode != RESULT_OK || uri == null) return
        val text = input.text.toString().trim().ifEmpty { "Here is a photo." }
        input.setText("")
        lines.add("you: [photo] $text")
        adapter.notifyDataSetChanged()
        send.isEnabled = false
        val app = application as MemloraApp
        app.worker.submit {
            try {
                val bytes = contentResolver.openInputStream(uri)?.use { Images.readBounded(it) }
                    ?: throw IllegalStateException("the picked image cannot be opened")
                val png = Images.pngForStore(bytes)
                app.engine().shareImage(png, text) { s -> runOnUiThread { status.text = s } }
            } catch (e: Throwable) {
                runOnUiThread {
                    lines.add("memlora: error: ${e.message ?: e.javaClass.simpleName}")
                    adapter.notifyDataSetChanged()
                }
            } finally {
                runOnUiThread { send.isEnabled = true }
            }
        }
    }

    override fun onCreateOptionsMenu(menu: Menu): Boolean {
        menuInflater.inflate(R.menu.main, menu)
        return true
    }

    override fun onOptionsItemSelected(item: MenuItem): Boolean = when (item.itemId) {
        R.id.action_memories -> { startActivity(Intent(this, MemoriesActivity::class.java)); true }
        R.id.action_settings -> { startActivity(Intent(this, SettingsActivity::class.java)); true }
        else -> super.onOptionsItemSelected(item)
    }

    companion object {
        private const val PICK_IMAGE = 1
    }
}
