package org.memlora.demo

import android.graphics.Bitmap
import android.graphics.BitmapFactory
import java.io.ByteArrayOutputStream
import java.io.InputStream
import org.memlora.core.BundleError

/** Images the user shares in chat, as the store keeps them (runtimes/memory/pipeline.py's _to_rgb + _png). */
object Images {
    /** Shared images are kept at most this many pixels on a side (pipeline.STORE_IMAGE_SIDE; the vision op reads 224). */
    const val STORE_SIDE = 448
    /** A picked file larger than this is refused before it is decoded. */
    const val MAX_FILE_BYTES = 40L * 1024 * 1024

    /** Reads at most [MAX_FILE_BYTES] from [input]; a larger file is refused with one line. */
    fun readBounded(input: InputStream): ByteArray {
        val out = ByteArrayOutputStream()
        val buf = ByteArray(64 * 1024)
        var total = 0L
        while (true) {
            val n = input.read(buf)
            if (n < 0) break
            total += n
            if (total > MAX_FILE_BYTES) throw BundleError("the picked image is larger than ${MAX_FILE_BYTES / (1024 * 1024)} MB")
            out.write(buf, 0, n)
        }
        return out.toByteArray()
    }

    /** Image file bytes (any format the platform decodes) -> RGB PNG bytes no larger than [STORE_SIDE] a side. */
    fun pngForStore(file: ByteArray): ByteArray {
        val bounds = BitmapFactory.Options().apply { inJustDecodeBounds = true }
        BitmapFactory.decodeByteArray(file, 0, file.size, bounds)
        if (bounds.outWidth <= 0 || bounds.outHeight <= 0) throw BundleError("the picked file is not an image this phone can read")
        var sample = 1
        while (maxOf(bounds.outWidth, bounds.outHeight) / (sample * 2) >= STORE_SIDE) sample *= 2 // decode no larger than needed
        val decoded = BitmapFactory.decodeByteArray(file, 0, file.size, BitmapFactory.Options().apply {
            inSampleSize = sample
            inPreferredConfig = Bitmap.Config.ARGB_8888
        }) ?: throw BundleError("the picked file is not an image this phone can read")
        val scale = minOf(1.0, STORE_SIDE.toDouble() / maxOf(decoded.width, decoded.height))
        val bmp = if (scale < 1.0) Bitmap.createScaledBitmap(decoded, maxOf(1, (decoded.width * scale).toInt()),
            maxOf(1, (decoded.height * scale).toInt()), true) else decoded
        val png = ByteArrayOutputStream()
        bmp.compress(Bitmap.CompressFormat.PNG, 100, png)
        return png.toByteArray()
    }

    /** PNG bytes -> the uint8 CHW RGB values of a [size] x [size] bilinear resize: what the vision program's
     *  `vision_encoder` takes (runtimes/vision.py image_tensor) and LlmModule.prefillImages passes to it. */
    fun chwPixels(png: ByteArray, size: Int): IntArray {
        val bmp = BitmapFactory.decodeByteArray(png, 0, png.size) ?: throw BundleError("a stored image cannot be decoded")
        val scaled = Bitmap.createScaledBitmap(bmp, size, size, true)
        val argb = IntArray(size * size)
        scaled.getPixels(argb, 0, size, 0, 0, size, size)
        val plane = size * size
        val chw = IntArray(3 * plane)
        for (i in 0 until plane) {
            val c = argb[i]
            chw[i] = (c shr 16) and 0xff
            chw[plane + i] = (c shr 8) and 0xff
            chw[2 * plane + i] = c and 0xff
        }
        return chw
    }
}
