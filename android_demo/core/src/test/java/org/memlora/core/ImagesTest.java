package org.memlora.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.io.File;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import org.json.JSONArray;
import org.json.JSONObject;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

/**
 * Shared images (MemLoRA-V) as runtimes/memory/pipeline.py keeps them: the phone reads a store the Python pipeline
 * wrote (pixels, turn, date, the text they were shared with; real MiniLM embeddings), ranks the images for a question
 * as Python does, sends the same questions to the vision op with the same image (and the others to generate), and
 * writes the same rows when it shares the same images itself.
 */
public class ImagesTest {
    @Rule public TemporaryFolder tmp = new TemporaryFolder();

    @Test
    public void storesRanksAndRoutesLikePython() throws Exception {
        Map<String, Object> v = Vectors.obj(Vectors.load("images.json"));
        MemoryStore.EmbedFn table = StoreTest.table(v.get("embeddings"));
        File db = new File(tmp.getRoot(), "images.sqlite");
        Files.copy(new File(Vectors.dir(), (String) v.get("db")).toPath(), db.toPath());
        List<byte[]> seen = new ArrayList<>();
        List<String> generated = new ArrayList<>();
        MemoryCycle.Llm llm = (op, messages, maxNew, onText) -> {
            generated.add(op);
            return new MemoryCycle.Generation("from text", 0, 1, "stop_token");
        };
        int routed = 0;
        try (MemoryStore store = new MemoryStore(db.getPath())) {
            assertEquals(3, store.imageCount("user"));
            assertEquals(0, store.imageCount("bob"));
            MemoryCycle cycle = new MemoryCycle(llm, table::embed, store, "user", new MemoryCycle.Config(),
                    MemoryCycle.templatesOf(Vectors.bundle()));
            cycle.vision = (png, question, maxNew, onText) -> {
                seen.add(png);
                return new MemoryCycle.Generation("vision answer", 0, 2, "stop_token");
            };
            assertEquals(((Number) v.get("visual_min_score")).doubleValue(), cycle.config.visualMinScore, 0.0);
            assertEquals(((Number) v.get("visual_min_margin")).doubleValue(), cycle.config.visualMinMargin, 0.0);
            for (Object o : Vectors.arr(v.get("cases"))) {
                Map<String, Object> c = Vectors.obj(o);
                String q = (String) c.get("question");
                assertEquals(q, c.get("visual_words"), MemoryCycle.VISUAL_WORDS.matcher(q).find());
                List<MemoryStore.StoredImage> hits = store.searchImages(table.embed(Collections.singletonList(q))[0], 3, "user");
                List<Object> want = Vectors.arr(c.get("hits"));
                assertEquals(q, want.size(), hits.size());
                for (int i = 0; i < want.size(); i++) {
                    Map<String, Object> w = Vectors.obj(want.get(i));
                    assertEquals(q + " rank " + i, w.get("turn_id"), hits.get(i).turnId);
                    assertEquals(q + " score " + i, ((Number) w.get("score")).doubleValue(), hits.get(i).score, 1e-5);
                    assertEquals(w.get("shared_at"), hits.get(i).sharedAt);
                    assertEquals(w.get("context"), hits.get(i).context);
                }
                int before = seen.size();
                MemoryCycle.Answer a = cycle.answer(q, null, null);
                if ("vqa".equals(c.get("route"))) {
                    routed++;
                    assertEquals(q, "vqa", a.call.op);
                    assertEquals(q, hits.get(0).turnId, a.image.turnId);
                    assertArrayEquals(hits.get(0).png, seen.get(before));
                    assertEquals("vision answer", a.text);
                } else {
                    assertEquals(q, "generate", a.call.op);
                    assertNull(a.image);
                }
            }
        }
        assertEquals(3, routed);
        assertEquals(3, generated.size());
        // A row that is not a PNG (written by something else) is answered from text.
        File broken = new File(tmp.getRoot(), "broken.sqlite");
        Files.copy(new File(Vectors.dir(), (String) v.get("db")).toPath(), broken.toPath());
        try (java.sql.Connection conn = java.sql.DriverManager.getConnection("jdbc:sqlite:" + broken.getPath());
             java.sql.PreparedStatement ps = conn.prepareStatement("UPDATE images SET png = ?")) {
            ps.setBytes(1, "GIF89a".getBytes("US-ASCII"));
            ps.executeUpdate();
        }
        try (MemoryStore store = new MemoryStore(broken.getPath())) {
            MemoryCycle cycle = new MemoryCycle(llm, table::embed, store, "user", new MemoryCycle.Config(),
                    MemoryCycle.templatesOf(Vectors.bundle()));
            cycle.vision = (png, question, maxNew, onText) -> { throw new AssertionError("not a PNG: must not reach the vision op"); };
            String q = (String) Vectors.obj(Vectors.arr(v.get("cases")).get(0)).get("question");
            assertEquals("generate", cycle.answer(q, null, null).call.op);
        }

        // The phone sharing the same images writes the rows Python wrote (context, turn, date, embedding, pixels).
        File mine = new File(tmp.getRoot(), "mine.sqlite");
        try (MemoryStore theirs = new MemoryStore(db.getPath()); MemoryStore store = new MemoryStore(mine.getPath())) {
            MemoryCycle cycle = new MemoryCycle(llm, table::embed, store, "user", new MemoryCycle.Config(),
                    MemoryCycle.templatesOf(Vectors.bundle()));
            for (Object o : Vectors.arr(v.get("shares"))) {
                Map<String, Object> s = Vectors.obj(o);
                Map<String, Object> t = Vectors.obj(s.get("turn_for_extract"));
                MemoryStore.StoredImage py = theirs.searchImages(table.embed(Collections.singletonList(
                        t.get("speaker") + ": " + t.get("text")))[0], 1, "user").get(0);
                Turn turn = cycle.shareImage(py.png, new Turn((String) t.get("speaker"), (String) t.get("text"), null,
                        (String) t.get("dia_id")), "1:56 pm on 8 May, 2023");
                assertTrue(turn.sharedImage);
                assertTrue(MemoryFormat.formatTurns(Collections.singletonList(turn)).endsWith(" [shares a photo]"));
                MemoryStore.StoredImage got = store.searchImages(table.embed(Collections.singletonList(py.context))[0], 1, "user").get(0);
                assertEquals(py.turnId, got.turnId);
                assertEquals(py.sharedAt, got.sharedAt);
                assertEquals(py.context, got.context);
                assertEquals(1.0, got.score, 1e-5);
                assertArrayEquals(py.png, got.png);
            }
            assertEquals(3, store.imageCount("user"));
            assertThrows(IllegalArgumentException.class, () -> store.addImage("GIF89a".getBytes(), "x", new float[384], "user", null, null));
        }
    }

    /** A bundle's vision section, read by the app as runtimes/manifest.py checks it: its files named in the closed world. */
    @Test
    public void visionSectionIsReadAndChecked() throws Exception {
        File src = Vectors.bundle().root;
        JSONObject raw = new JSONObject(new String(Files.readAllBytes(new File(src, Manifest.MANIFEST).toPath()), "UTF-8"));
        JSONObject files = raw.getJSONObject("files");
        String sha = "0000000000000000000000000000000000000000000000000000000000000000";
        for (String f : new String[] {"vision.pte", "vqa.lora.ptd"}) files.put(f, new JSONObject().put("bytes", 1).put("sha256", sha));
        JSONObject vision = new JSONObject()
                .put("op", "vqa").put("program", "vision.pte")
                .put("data_files", new JSONArray().put("vqa.lora.ptd"))
                .put("methods", new JSONObject().put("image", "vision_encoder").put("embed", "token_embedding").put("decode", "text_decoder"))
                .put("image", new JSONObject().put("size", 224).put("mean", new JSONArray("[127.5,127.5,127.5]")).put("std", new JSONArray("[127.5,127.5,127.5]")))
                .put("visual_tokens", 9)
                .put("prompt", new JSONObject().put("before", "<|im_start|>user\n").put("after", "\n{question}<|im_end|>\n"))
                .put("generation", new JSONObject().put("max_new_tokens", 8).put("answer_after", ", so "));
        raw.put("vision", vision);
        File dir = tmp.newFolder("vision-bundle");
        Files.write(new File(dir, Manifest.MANIFEST).toPath(), raw.toString().getBytes("UTF-8"));
        Manifest m = Manifest.load(dir, false);
        assertTrue(m.warnings.toString(), m.warnings.isEmpty()); // "vision" is a known key
        Manifest.Vision v = m.vision();
        assertEquals("vision.pte", v.program);
        assertEquals(224, v.imageSize);
        assertEquals(8, v.maxNewTokens);
        assertEquals("\nwhat color is it?<|im_end|>\n", v.after("  what color is it? "));
        assertEquals(Collections.singletonList("vqa.lora.ptd"), v.dataFiles);
        // the op names what it sees, then answers: the answer is what follows the last answer_after, as in Python
        assertEquals("yes", v.finalAnswer("blue, so yes"));
        assertEquals("no", v.finalAnswer("red, so blue, so no "));
        assertEquals("circle", v.finalAnswer(" circle"));
        vision.getJSONObject("generation").put("answer_after", "");
        Files.write(new File(dir, Manifest.MANIFEST).toPath(), raw.toString().getBytes("UTF-8"));
        assertTrue(assertThrows(BundleError.class, () -> Manifest.load(dir, false)).getMessage()
                .contains("vision.generation.answer_after"));
        vision.getJSONObject("generation").remove("answer_after");
        Files.write(new File(dir, Manifest.MANIFEST).toPath(), raw.toString().getBytes("UTF-8"));
        assertEquals("blue, so yes", Manifest.load(dir, false).vision().finalAnswer("blue, so yes"));
        assertNull(Vectors.bundle().vision());
        for (String[] bad : new String[][] {{"program", "../../etc/passwd"}, {"program", "other.pte"}}) {
            vision.put(bad[0], bad[1]);
            Files.write(new File(dir, Manifest.MANIFEST).toPath(), raw.toString().getBytes("UTF-8"));
            BundleError e = assertThrows(BundleError.class, () -> Manifest.load(dir, false));
            assertTrue(e.getMessage(), e.getMessage().contains("vision.program"));
        }
        vision.put("program", "vision.pte");
        // the ONNX graphs of the op (--format both): names in the closed world, typed fields, as Python checks them
        JSONObject onnx = new JSONObject().put("encoder", "vision.pte").put("embed", "vision.pte").put("decoder", "vision.pte")
                .put("data_files", new JSONArray().put("vqa.lora.ptd")).put("adapter_file", "vqa.lora.ptd").put("graph_id", 7)
                .put("past", new JSONObject().put("layers", 30).put("kv_heads", 3).put("head_dim", 64));
        vision.put("onnx", onnx);
        Files.write(new File(dir, Manifest.MANIFEST).toPath(), raw.toString().getBytes("UTF-8"));
        assertEquals("vision.pte", Manifest.load(dir, false).vision().program);
        for (String[] bad : new String[][] {{"decoder", "../foundation.onnx"}, {"embed", "unlisted.onnx"},
                {"adapter_file", "/etc/passwd"}}) {
            JSONObject copy = new JSONObject(onnx.toString()).put(bad[0], bad[1]);
            vision.put("onnx", copy);
            Files.write(new File(dir, Manifest.MANIFEST).toPath(), raw.toString().getBytes("UTF-8"));
            BundleError e = assertThrows(BundleError.class, () -> Manifest.load(dir, false));
            assertTrue(e.getMessage(), e.getMessage().contains("vision.onnx." + bad[0]));
        }
        // an ONNX-only bundle (--format onnx): no ExecuTorch program, the graphs alone; without either, refused
        vision.put("onnx", onnx);
        JSONObject et = new JSONObject(vision.toString());
        for (String k : new String[] {"program", "data_files", "methods"}) vision.remove(k);
        Files.write(new File(dir, Manifest.MANIFEST).toPath(), raw.toString().getBytes("UTF-8"));
        assertNull(Manifest.load(dir, false).vision().program);
        vision.remove("onnx");
        Files.write(new File(dir, Manifest.MANIFEST).toPath(), raw.toString().getBytes("UTF-8"));
        assertTrue(assertThrows(BundleError.class, () -> Manifest.load(dir, false)).getMessage().contains("vision.program"));
        for (String k : new String[] {"program", "data_files", "methods"}) vision.put(k, et.get(k));
        vision.put("onnx", new JSONObject(onnx.toString()).put("data_files", new JSONArray().put("../x.data")));
        Files.write(new File(dir, Manifest.MANIFEST).toPath(), raw.toString().getBytes("UTF-8"));
        assertTrue(assertThrows(BundleError.class, () -> Manifest.load(dir, false)).getMessage().contains("vision.onnx.data_files"));
        vision.put("onnx", new JSONObject(onnx.toString()).put("past", new JSONObject().put("layers", 0).put("kv_heads", 3).put("head_dim", 64)));
        Files.write(new File(dir, Manifest.MANIFEST).toPath(), raw.toString().getBytes("UTF-8"));
        assertTrue(assertThrows(BundleError.class, () -> Manifest.load(dir, false)).getMessage().contains("vision.onnx.past.layers"));
        vision.remove("onnx");
        vision.getJSONObject("image").put("size", 0);
        Files.write(new File(dir, Manifest.MANIFEST).toPath(), raw.toString().getBytes("UTF-8"));
        assertTrue(assertThrows(BundleError.class, () -> Manifest.load(dir, false)).getMessage().contains("vision.image.size"));
    }
}
