package org.memlora.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.Test;

/**
 * A bundle is a closed world: every case of tests/data/hostile_manifests.json (given as -Dmemlora.hostile=FILE) gets
 * the verdict recorded there, the verdict runtimes/manifest.py gives (tests/test_manifest_closed_world.py), so the
 * phone never opens a file outside the bundle.
 */
public class HostileManifestTest {
    static Map<String, Object> vectors() {
        String f = System.getProperty("memlora.hostile");
        if (f == null || !new File(f).isFile())
            fail("no hostile manifest vectors: pass -Dmemlora.hostile=tests/data/hostile_manifests.json (./build.sh android-test does)");
        try {
            return JsonTree.obj(JsonTree.parse(new String(Files.readAllBytes(Paths.get(f)), StandardCharsets.UTF_8)), "vectors");
        } catch (IOException e) {
            throw new AssertionError("cannot read " + f + ": " + e);
        }
    }

    static Object subst(Object v, String sandbox) {
        if (v instanceof String) return ((String) v).replace("$SANDBOX", sandbox);
        if (v instanceof List) {
            List<Object> out = new ArrayList<>();
            for (Object o : JsonTree.arr(v, "list")) out.add(subst(o, sandbox));
            return out;
        }
        if (v instanceof Map) {
            Map<String, Object> out = new LinkedHashMap<>();
            for (Map.Entry<String, Object> e : JsonTree.obj(v, "map").entrySet()) out.put((String) subst(e.getKey(), sandbox), subst(e.getValue(), sandbox));
            return out;
        }
        return v;
    }

    /** A deep copy of a JSON value (so one case's mutations do not leak into the next). */
    static Object copy(Object v) {
        return v instanceof Map || v instanceof List ? JsonTree.parse(JsonTree.write(v, 0)) : v;
    }

    @SuppressWarnings("unchecked")
    static Object mutate(Object raw, List<Object> ops) {
        for (Object o : ops) {
            Map<String, Object> op = JsonTree.obj(o, "mutation");
            List<Object> path = JsonTree.arr(op.get("path"), "path");
            if (path.isEmpty()) {
                raw = copy(op.get("set"));
                continue;
            }
            Object node = raw;
            for (Object k : path.subList(0, path.size() - 1))
                node = node instanceof Map ? ((Map<String, Object>) node).get(k) : ((List<Object>) node).get(((Number) k).intValue());
            Object last = path.get(path.size() - 1);
            boolean delete = Boolean.TRUE.equals(op.get("delete"));
            if (node instanceof Map) {
                if (delete) ((Map<String, Object>) node).remove(last);
                else ((Map<String, Object>) node).put((String) last, copy(op.get("set")));
            } else {
                int i = ((Number) last).intValue();
                if (delete) ((List<Object>) node).remove(i);
                else ((List<Object>) node).set(i, copy(op.get("set")));
            }
        }
        return raw;
    }

    static void write(Path p, String text) throws IOException {
        Files.createDirectories(p.getParent());
        Files.write(p, text.getBytes(StandardCharsets.UTF_8));
    }

    static void deleteTree(Path p) throws IOException {
        if (!Files.exists(p, java.nio.file.LinkOption.NOFOLLOW_LINKS)) return;
        try (Stream<Path> walk = Files.walk(p)) {
            for (Path q : (Iterable<Path>) walk.sorted(Comparator.reverseOrder())::iterator) Files.delete(q);
        }
    }

    /** Lays out one case in {@code sandbox} as the vectors file describes it; returns the directory to load. */
    static File build(Map<String, Object> base, Map<String, Object> c, Path sandbox) throws IOException {
        String s = sandbox.toRealPath().toString();
        String at = c.containsKey("bundle_at") ? (String) c.get("bundle_at") : "bundle";
        Path bundle = sandbox.resolve(at);
        Files.createDirectories(bundle);
        for (Map.Entry<String, Object> f : JsonTree.obj(base.get("files"), "files").entrySet()) write(bundle.resolve(f.getKey()), (String) f.getValue());
        if (c.containsKey("remove")) for (Object rel : JsonTree.arr(c.get("remove"), "remove")) Files.delete(sandbox.resolve((String) rel));
        if (c.containsKey("files"))
            for (Map.Entry<String, Object> f : JsonTree.obj(c.get("files"), "files").entrySet()) write(sandbox.resolve(f.getKey()), (String) f.getValue());
        Object raw = subst(mutate(copy(base.get("manifest")), c.containsKey("mutate") ? JsonTree.arr(c.get("mutate"), "mutate") : new ArrayList<>()), s);
        String text = c.containsKey("manifest_text") ? (String) c.get("manifest_text") : JsonTree.write(raw, 1);
        write(c.containsKey("manifest_at") ? sandbox.resolve((String) c.get("manifest_at")) : bundle.resolve("manifest.json"), text);
        if (c.containsKey("symlinks"))
            for (Map.Entry<String, Object> l : JsonTree.obj(c.get("symlinks"), "symlinks").entrySet()) {
                Path link = sandbox.resolve(l.getKey());
                if (Files.isDirectory(link, java.nio.file.LinkOption.NOFOLLOW_LINKS)) deleteTree(link);
                else Files.deleteIfExists(link);
                Files.createSymbolicLink(link, Paths.get((String) subst(l.getValue(), s)));
            }
        return sandbox.resolve(c.containsKey("load") ? (String) c.get("load") : at).toFile();
    }

    /** Every file name the manifest gives a reader to open (tests/test_manifest_closed_world.py named_files). */
    static List<String> namedFiles(Manifest m) {
        List<String> names = new ArrayList<>();
        names.add((String) m.tokenizer().get("file"));
        for (Manifest.OpEntry e : m.ops.values()) {
            names.add(e.program);
            names.addAll(e.dataFiles);
            for (Map<String, Object> b : e.backends.values()) {
                names.add((String) b.get("program"));
                if (b.get("data_files") != null) for (Object o : JsonTree.arr(b.get("data_files"), "data_files")) names.add((String) o);
                if (b.get("adapter_file") instanceof String) names.add((String) b.get("adapter_file"));
            }
        }
        Object backends = m.raw.get("backends");
        if (backends instanceof Map)
            for (Object info : JsonTree.obj(backends, "backends").values())
                if (JsonTree.obj(info, "backend").get("genai_config") instanceof String) names.add((String) JsonTree.obj(info, "backend").get("genai_config"));
        if (m.embedder() != null) {
            names.add((String) m.embedder().get("program"));
            names.add((String) m.embedder().get("tokenizer"));
        }
        return names;
    }

    @Test
    public void everyHostileManifestGetsThePythonVerdict() throws IOException {
        Map<String, Object> v = vectors();
        Map<String, Object> base = JsonTree.obj(v.get("base"), "base");
        int n = 0;
        for (Object o : JsonTree.arr(v.get("cases"), "cases")) {
            Map<String, Object> c = JsonTree.obj(o, "case");
            String name = (String) c.get("name");
            Path sandbox = Files.createTempDirectory("hostile-");
            try {
                File dir = build(base, c, sandbox);
                List<Object> modes = c.containsKey("verify") ? JsonTree.arr(c.get("verify"), "verify") : Arrays.asList(true, false);
                for (Object mode : modes) {
                    boolean verify = (Boolean) mode;
                    String what = name + " (verify=" + verify + ")";
                    Object expect = c.get("expect");
                    Manifest m;
                    try {
                        m = Manifest.load(dir, verify);
                    } catch (BundleError e) {
                        if ("ok".equals(expect)) throw new AssertionError(what + ": refused a good bundle: " + e.getMessage(), e);
                        assertFalse(what + ": " + e.getMessage(), e.getMessage().contains("\n"));
                        Object field = JsonTree.obj(expect, "expect").get("field");
                        if (field != null)
                            assertTrue(what + ": " + e.getMessage() + " does not name " + field, e.getMessage().contains((String) field));
                        n++;
                        continue;
                    } catch (RuntimeException e) {
                        throw new AssertionError(what + ": " + e + " instead of a BundleError", e);
                    }
                    if (!"ok".equals(expect)) fail(what + ": loaded a bundle that must be refused (" + expect + ")");
                    if (verify) {
                        for (String f : namedFiles(m)) {
                            File file = m.file(f);
                            assertTrue(what + ": " + f, file.isFile());
                            assertTrue(what + ": " + f + " resolves to " + file.getCanonicalPath(), file.getCanonicalPath().startsWith(dir.getCanonicalPath() + File.separator));
                        }
                        assertEquals(what, m.file((String) m.tokenizer().get("file")), m.tokenizerFile());
                    }
                    n++;
                }
            } finally {
                deleteTree(sandbox);
            }
        }
        assertTrue("ran " + n + " verdicts", n >= 100);
    }

    @Test
    public void checkedAccessorRefusesWhatLoadWould() throws IOException {
        Map<String, Object> v = vectors();
        Map<String, Object> base = JsonTree.obj(v.get("base"), "base");
        Path sandbox = Files.createTempDirectory("hostile-");
        try {
            Map<String, Object> c = new LinkedHashMap<>();
            c.put("name", "base");
            File dir = build(base, c, sandbox);
            Manifest m = Manifest.load(dir, true);
            for (String bad : new String[] {"../outside/other.pte", "/etc/passwd", "", ".", "..", "a/b", "a\\b", "a\0b", "C:x", "not-listed.pte"}) {
                try {
                    m.file(bad);
                    fail("opened " + JsonTree.write(Arrays.asList(bad), 0));
                } catch (BundleError e) {
                    assertFalse(e.getMessage().contains("\n"));
                }
            }
            // a listed file swapped for a link to outside after loading is refused when opened
            Path outside = sandbox.resolve("outside/model.pte");
            write(outside, (String) JsonTree.obj(base.get("files"), "files").get("model.pte"));
            Files.delete(dir.toPath().resolve("model.pte"));
            Files.createSymbolicLink(dir.toPath().resolve("model.pte"), outside);
            try {
                m.file("model.pte");
                fail("followed a link out of the bundle");
            } catch (BundleError e) {
                assertTrue(e.getMessage(), e.getMessage().contains("outside the bundle"));
            }
            Files.delete(dir.toPath().resolve("tokenizer.json"));
            try {
                m.tokenizerFile();
                fail("opened a missing tokenizer");
            } catch (BundleError e) {
                assertEquals("bundle file missing: tokenizer.json", e.getMessage());
            }
        } finally {
            deleteTree(sandbox);
        }
    }

    @Test
    public void plainNameRuleMatchesPython() {
        for (String good : new String[] {"model.pte", "tokenizer.json", "foundation.onnx.data", "a b", "\u00e9.pte", ".hidden", new String(new char[255]).replace('\0', 'x')})
            assertTrue(good, Manifest.isPlainName(good));
        for (Object bad : new Object[] {"", ".", "..", "../x", "/x", "a/b", "a\\b", "C:x", "a\0b", "a\nb", "a\u007fb",
                new String(new char[256]).replace('\0', 'x'), new String(new char[128]).replace('\0', '\u00e9'), "a\ud800", 3L, null})
            assertFalse(String.valueOf(bad), Manifest.isPlainName(bad));
    }
}
