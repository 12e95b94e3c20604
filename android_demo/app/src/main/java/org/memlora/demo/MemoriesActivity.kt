package org.memlora.demo

import android.app.Activity
import android.app.AlertDialog
import android.os.Bundle
import android.widget.ArrayAdapter
import android.widget.ListView
import android.widget.TextView
import org.memlora.core.Memory
import org.memlora.core.MemoryFormat

/** The store's rows with their history of events; a row can be deleted (one transaction, kept in the history). */
class MemoriesActivity : Activity() {
    private val rows = ArrayList<Memory>()
    private val labels = ArrayList<String>()
    private lateinit var adapter: ArrayAdapter<String>
    private lateinit var summary: TextView

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_memories)
        summary = findViewById(R.id.summary)
        adapter = ArrayAdapter(this, android.R.layout.simple_list_item_1, labels)
        val list = findViewById<ListView>(R.id.rows)
        list.adapter = adapter
        list.setOnItemClickListener { _, _, pos, _ -> showHistory(rows[pos]) }
        refresh()
    }

    private fun refresh() {
        val app = application as MemloraApp
        app.worker.submit {
            try {
                val store = app.engine().store
                val all = store.all(Engine.OWNER)
                val text = all.map { m ->
                    "${m.text}\n#${m.id} · ${MemoryFormat.displayDate(m.updatedAt)} · ${store.history(m.id).size} events"
                }
                val events = store.history(null).size
                runOnUiThread {
                    rows.clear(); rows.addAll(all)
                    labels.clear(); labels.addAll(text)
                    adapter.notifyDataSetChanged()
                    summary.text = "${all.size} memories, $events history events (tap one for its history)"
                }
            } catch (e: Throwable) {
                runOnUiThread { summary.text = "error: ${e.message}" }
            }
        }
    }

    private fun showHistory(m: Memory) {
        val app = application as MemloraApp
        app.worker.submit {
            val hist = app.engine().store.history(m.id).joinToString("\n\n") { h ->
                val old = h["old_text"]?.let { "\n  was: $it" } ?: ""
                "${h["at"]}  ${h["event"]}  ${h["new_text"] ?: ""}$old  (turns ${h["source_turns"]}, batch ${h["batch"]})"
            }
            runOnUiThread {
                AlertDialog.Builder(this)
                    .setTitle(m.text)
                    .setMessage(hist.ifEmpty { "(no events)" })
                    .setPositiveButton(R.string.delete) { _, _ ->
                        app.worker.submit { app.engine().store.delete(m.id, MemoryFormat.now()); refresh() }
                    }
                    .setNegativeButton(android.R.string.cancel, null)
                    .show()
            }
        }
    }
}
