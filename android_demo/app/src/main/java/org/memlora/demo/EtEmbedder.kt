package org.memlora.demo

import java.io.Closeable
import java.io.File
import org.memlora.core.BundleError
import org.memlora.core.Manifest
import org.memlora.core.MemoryCycle
import org.memlora.core.WordPiece
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

/**
 * The bundle's retrieval embedder (all-MiniLM-L6-v2 as embedder.pte, mean pooling + L2 norm inside the program) run by
 * ExecuTorch's Module API: WordPiece ids from :core (the same ids as the Python tokenizer), inputs input_ids and
 * attention_mask int64 [1, seq], output float32 [1, dim].
 */
class EtEmbedder(m: Manifest) : MemoryCycle.Embedder, Closeable {
    private val entry = m.embedder() ?: throw BundleError(
        "the bundle has no embedder: export it with --embedder (the default for --target android)")
    private val tokenizer = WordPiece.load(File(m.root, entry["tokenizer"] as String), (entry["max_len"] as Number).toInt())
    private val dim = (entry["dim"] as Number).toInt()
    private val module: Module = Module.load(File(m.root, entry["program"] as String).path)

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
