package org.memlora.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/** The manifest of a real exported bundle and variants of it: load_manifest's verdicts, field by field. */
public class ManifestTest {
    static Map<String, Object> cases() {
        return Vectors.obj(Vectors.load("manifest.json"));
    }

    static File bundle() {
        return new File((String) cases().get("bundle"));
    }

    @Test
    public void readsBundlesLikePython() {
        File vectors = Vectors.dir();
        int n = 0;
        for (Object o : Vectors.arr(cases().get("cases"))) {
            Map<String, Object> c = Vectors.obj(o);
            File dir = c.get("dir") == null ? bundle() : new File(vectors, (String) c.get("dir"));
            String what = (String) c.get("name");
            Manifest m;
            try {
                m = Manifest.load(dir, (Boolean) c.get("verify"));
            } catch (BundleError e) { // both refuse, naming the same field or file; the wording is each reader's own
                if (!c.containsKey("error")) throw new AssertionError(what + ": Python read it, Java: " + e.getMessage(), e);
                String names = (String) Vectors.obj(c.get("error")).get("names");
                assertTrue(what + ": " + e.getMessage() + " does not name " + names, e.getMessage().contains(names));
                assertTrue(what + ": one line", !e.getMessage().contains("\n"));
                n++;
                continue;
            }
            if (c.containsKey("error")) fail(what + ": Python refused it (" + c.get("error") + "), Java read it");
            Map<String, Object> ok = Vectors.obj(c.get("ok"));
            Map<String, Object> ops = new LinkedHashMap<>();
            for (Manifest.OpEntry e : m.ops.values()) {
                Map<String, Object> op = new LinkedHashMap<>();
                op.put("program", e.program);
                op.put("data_files", new ArrayList<Object>(e.dataFiles));
                op.put("prompt_template", e.promptTemplate);
                Map<String, Object> prompt = new LinkedHashMap<>();
                prompt.put("id", e.prompt.id);
                prompt.put("system", e.prompt.system);
                prompt.put("user", e.prompt.user);
                prompt.put("fields", new ArrayList<Object>(e.prompt.fields));
                op.put("prompt", prompt);
                op.put("generation", e.generation);
                op.put("stop_token_ids", new ArrayList<Object>(e.stopTokenIds));
                op.put("adapter", e.adapter);
                op.put("backends", new LinkedHashMap<String, Object>(e.backends));
                ops.put(e.name, op);
            }
            Vectors.assertJsonEquals(what + " ops", ok.get("ops"), ops);
            assertEquals(what, ((Long) ok.get("max_seq_len")).intValue(), m.maxSeqLen());
            assertEquals(what, ok.get("chat_template"), m.tokenizer().get("chat_template"));
            ChatFormat want = ChatFormatTest.format(ok.get("chat_format")), got = m.chatFormat();
            assertEquals(what, want.roles.keySet(), got.roles.keySet());
            for (String r : want.roles.keySet()) assertArrayEquals(what + " " + r, want.roles.get(r), got.roles.get(r));
            assertEquals(what, want.generationPrompt, got.generationPrompt);
            assertEquals(what, want.defaultSystem, got.defaultSystem);
            assertEquals(what, want.addSpecialTokens, got.addSpecialTokens);
            assertEquals(what, ok.get("tokenizer_file"), m.tokenizer().get("file"));
            assertEquals(what, ok.get("strategy"), m.strategy());
            assertEquals(what, ok.get("format"), m.format());
            Vectors.assertJsonEquals(what + " versions", ok.get("versions"), m.versions());
            Vectors.assertJsonEquals(what + " embedder", ok.get("embedder"), m.embedder());
            if (what.equals("unknown-keys")) assertEquals(1, m.warnings.size());
            n++;
        }
        assertTrue(n >= 17);
    }

    @Test
    public void refusesSchema1BundlesWithOneLineSayingReExport() throws Exception {
        java.nio.file.Path dir = java.nio.file.Files.createTempDirectory("schema1-");
        try {
            Map<String, Object> raw = JsonTree.obj(JsonTree.parse(new String(java.nio.file.Files.readAllBytes(
                    new File(bundle(), Manifest.MANIFEST).toPath()), java.nio.charset.StandardCharsets.UTF_8)), "manifest");
            raw.put("schema_version", 1L);
            JsonTree.obj(raw.get("tokenizer"), "tokenizer").remove("chat_format");
            for (Object op : JsonTree.obj(raw.get("ops"), "ops").values()) JsonTree.obj(op, "op").remove("prompt");
            java.nio.file.Files.write(dir.resolve(Manifest.MANIFEST), JsonTree.write(raw, 1).getBytes(java.nio.charset.StandardCharsets.UTF_8));
            try {
                Manifest.load(dir.toFile(), false);
                fail("loaded a schema 1 bundle");
            } catch (BundleError e) {
                assertTrue(e.getMessage(), e.getMessage().contains("schema_version 1") && e.getMessage().contains("re-export"));
                assertTrue(e.getMessage(), !e.getMessage().contains("\n"));
            }
        } finally {
            java.nio.file.Files.deleteIfExists(dir.resolve(Manifest.MANIFEST));
            java.nio.file.Files.delete(dir);
        }
    }

    @Test
    public void refusesAnotherExecutorchVersion() {
        Manifest m = Manifest.load(bundle(), false);
        String exported = (String) m.versions().get("executorch");
        m.checkRuntimeVersion("executorch", exported);
        m.checkRuntimeVersion("executorch", Manifest.release(exported) + "+cpu");
        for (String other : new String[] {"1.4.1", "0.7.0", "9.9.9"}) {
            if (Manifest.release(exported).equals(other)) continue;
            try {
                m.checkRuntimeVersion("executorch", other);
                fail("accepted executorch-android " + other + " for a bundle exported with " + exported);
            } catch (BundleError e) {
                assertTrue(e.getMessage(), e.getMessage().contains("re-export with executorch==" + other));
            }
        }
        try {
            m.checkRuntimeVersion("qnn", "1.0");
            fail("accepted a bundle that records no qnn version");
        } catch (BundleError e) {
            assertTrue(e.getMessage(), e.getMessage().contains("records no qnn version"));
        }
        Object ort = m.versions().get("onnxruntime");
        if (ort instanceof String) {
            m.checkRuntimeVersion("onnxruntime", (String) ort);
            try {
                m.checkRuntimeVersion("onnxruntime", "1.0.0");
                fail("accepted an older onnxruntime than the exporter's");
            } catch (BundleError e) {
                assertTrue(e.getMessage(), e.getMessage().contains(">= " + Manifest.release((String) ort)));
            }
        }
        assertTrue(Manifest.compareVersions("1.31.1", "1.22.0") > 0);
        assertTrue(Manifest.compareVersions("1.9", "1.10.0") < 0);
    }

    @Test
    public void rendersPromptsWithTheBundleFormat() {
        Manifest m = Manifest.load(bundle(), false);
        List<ChatMessage> msgs = MemoryFormat.generateMessages("Where?", new ArrayList<>(), m.op("generate").prompt);
        String p = m.renderPrompt(msgs);
        assertTrue(p, p.contains(msgs.get(1).content));
        assertTrue(p, p.endsWith(m.chatFormat().generationPrompt));
        assertTrue(m.opBytes("generate", "executorch") > 0);
        try {
            m.op("translate");
            fail();
        } catch (BundleError e) {
            assertTrue(e.getMessage().startsWith("op 'translate' is not in this bundle; ops: "));
        }
    }
}
