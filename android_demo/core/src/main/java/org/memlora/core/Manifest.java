package org.memlora.core;

import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The bundle manifest (schema v1) read exactly as runtimes/manifest.py {@code load_manifest} reads it: the same
 * required keys, schema check, file size + sha256 verification and op -> file checks, with the same messages. On top,
 * {@link #checkRuntimeVersion} refuses a bundle whose programs were exported with another ExecuTorch version than the
 * runtime the app links (a .pte must run on the runtime version it was exported with).
 */
public final class Manifest {
    public static final int SCHEMA_VERSION = 1;
    public static final String MANIFEST = "manifest.json";
    public static final List<String> REQUIRED = Arrays.asList("schema_version", "model", "tokenizer", "strategy",
            "quantization", "format", "versions", "ops", "files");
    static final Set<String> KNOWN = new HashSet<>(REQUIRED);

    static {
        KNOWN.addAll(Arrays.asList("tool", "created_utc", "spec", "export", "backends", "embedder"));
    }

    /** One memory operation: its program, data files, prompt template and generation defaults. */
    public static final class OpEntry {
        public final String name;
        public final String program;
        public final List<String> dataFiles;
        public final String promptTemplate;
        public final Map<String, Object> generation;
        public final List<Long> stopTokenIds;
        public final Map<String, Object> adapter; // null when the op has none
        /** Per format ("executorch", "onnx") this op's {program, data_files, adapter_file} in multi-format bundles. */
        public final Map<String, Map<String, Object>> backends = new LinkedHashMap<>();
        public final Map<String, Object> raw;

        OpEntry(String name, Map<String, Object> op) {
            this.name = name;
            this.raw = op;
            this.program = (String) op.get("program");
            List<String> df = new ArrayList<>();
            if (op.get("data_files") != null) for (Object o : Json.arr(op.get("data_files"), "data_files")) df.add((String) o);
            this.dataFiles = Collections.unmodifiableList(df);
            this.promptTemplate = (String) op.get("prompt_template");
            this.generation = op.get("generation") == null ? new LinkedHashMap<>() : Json.obj(op.get("generation"), "generation");
            List<Long> stops = new ArrayList<>();
            if (op.get("stop_token_ids") != null) for (Object o : Json.arr(op.get("stop_token_ids"), "stop_token_ids")) stops.add(((Number) o).longValue());
            this.stopTokenIds = Collections.unmodifiableList(stops);
            this.adapter = op.get("adapter") instanceof Map ? Json.obj(op.get("adapter"), "adapter") : null;
            if (op.get("backends") instanceof Map)
                for (Map.Entry<String, Object> b : Json.obj(op.get("backends"), "backends").entrySet())
                    backends.put(b.getKey(), Json.obj(b.getValue(), "backend " + b.getKey()));
        }

        /** The files this op needs for one format: its program, data files and (ONNX separate adapters) adapter file. */
        public Map<String, Object> backend(String format) {
            if (backends.containsKey(format)) return backends.get(format);
            Map<String, Object> b = new LinkedHashMap<>();
            b.put("program", program);
            b.put("data_files", new ArrayList<Object>(dataFiles));
            return b;
        }

        /** A generation default (max_new_tokens, temperature, top_p) with the runtime's fallback. */
        public double gen(String key, double fallback) {
            Object v = generation.get(key);
            return v instanceof Number ? ((Number) v).doubleValue() : fallback;
        }

        public int maxNewTokens() {
            return (int) gen("max_new_tokens", 128);
        }
    }

    public final File root;
    public final Map<String, Object> raw;
    public final Map<String, OpEntry> ops = new LinkedHashMap<>();
    public final List<String> warnings = new ArrayList<>();
    private ChatTemplate template;

    private Manifest(File root, Map<String, Object> raw) {
        this.root = root;
        this.raw = raw;
    }

    /** {@code load_manifest(bundle, verify)}. */
    public static Manifest load(File bundle, boolean verify) {
        File path = new File(bundle, MANIFEST);
        if (!path.isFile()) throw new BundleError(bundle.getPath() + " is not a memlora bundle: " + MANIFEST + " not found");
        String text;
        try {
            text = new String(Files.readAllBytes(path.toPath()), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new BundleError(path.getPath() + ": cannot read: " + e.getMessage());
        }
        Object parsed;
        try {
            parsed = Json.parse(text);
        } catch (Json.DecodeError e) {
            throw new BundleError(path.getPath() + ": invalid JSON: " + e.getMessage());
        }
        if (!(parsed instanceof Map)) throw new BundleError(path.getPath() + ": the manifest is not a JSON object");
        Map<String, Object> raw = Json.obj(parsed, "manifest");
        List<String> missing = new ArrayList<>();
        for (String k : REQUIRED) if (!raw.containsKey(k)) missing.add(k);
        if (!missing.isEmpty()) throw new BundleError(path.getPath() + ": missing required keys " + Py.repr(missing));
        Object sv = raw.get("schema_version");
        boolean svOk = (sv instanceof Number && ((Number) sv).doubleValue() == SCHEMA_VERSION) || Boolean.TRUE.equals(sv) && SCHEMA_VERSION == 1;
        if (!svOk)
            throw new BundleError(path.getPath() + ": schema_version " + Py.str(sv) + " is not supported (this runtime reads " + SCHEMA_VERSION + ")");
        Manifest m = new Manifest(bundle, raw);
        List<String> unknown = new ArrayList<>();
        for (String k : raw.keySet()) if (!KNOWN.contains(k)) unknown.add(k);
        unknown.sort(Py.CODE_POINT_ORDER);
        if (!unknown.isEmpty()) m.warnings.add(path.getPath() + ": unknown keys " + Py.repr(unknown) + " ignored");
        Map<String, Object> files = Json.obj(raw.get("files"), "files");
        if (verify) {
            for (Map.Entry<String, Object> e : files.entrySet()) {
                String name = e.getKey();
                Map<String, Object> entry = Json.obj(e.getValue(), "files entry");
                File f = new File(bundle, name);
                if (!f.isFile()) throw new BundleError("bundle file missing: " + name);
                long expect = ((Number) entry.get("bytes")).longValue();
                if (f.length() != expect)
                    throw new BundleError("bundle file " + name + ": " + f.length() + " bytes, manifest says " + expect + " (truncated?)");
                if (!sha256(f).equals(entry.get("sha256"))) throw new BundleError("bundle file " + name + ": sha256 mismatch (corrupted or modified)");
            }
        }
        Object emb = raw.get("embedder");
        if (emb != null) {
            Map<String, Object> em = Json.obj(emb, "embedder");
            for (String key : Arrays.asList("program", "tokenizer", "dim", "max_len", "pooling"))
                if (!em.containsKey(key)) throw new BundleError(path.getPath() + ": embedder entry misses " + Py.repr(key));
            for (String key : Arrays.asList("program", "tokenizer"))
                if (!files.containsKey(em.get(key)))
                    throw new BundleError("embedder names " + Py.repr(em.get(key)) + ", which the manifest's files do not list");
        }
        for (Map.Entry<String, Object> e : Json.obj(raw.get("ops"), "ops").entrySet()) {
            Map<String, Object> op = Json.obj(e.getValue(), "op " + e.getKey());
            List<Object[]> places = new ArrayList<>(); // {format or null, entry}
            places.add(new Object[] {null, op});
            if (op.get("backends") instanceof Map)
                for (Map.Entry<String, Object> b : Json.obj(op.get("backends"), "backends").entrySet())
                    places.add(new Object[] {b.getKey(), Json.obj(b.getValue(), "backend")});
            for (Object[] place : places) {
                @SuppressWarnings("unchecked") Map<String, Object> b = (Map<String, Object>) place[1];
                List<Object> needed = new ArrayList<>();
                needed.add(b.get("program"));
                if (b.get("data_files") != null) needed.addAll(Json.arr(b.get("data_files"), "data_files"));
                Object af = b.get("adapter_file");
                if (af instanceof String && !((String) af).isEmpty()) needed.add(af);
                for (Object f : needed)
                    if (!files.containsKey(f))
                        throw new BundleError("op " + Py.repr(e.getKey()) + (place[0] != null ? " (" + place[0] + ")" : "")
                                + " names " + Py.repr(f) + ", which the manifest's files do not list");
            }
            m.ops.put(e.getKey(), new OpEntry(e.getKey(), op));
        }
        return m;
    }

    public static String sha256(File f) {
        try (InputStream in = new FileInputStream(f)) {
            MessageDigest md = MessageDigest.getInstance("SHA-256");
            byte[] buf = new byte[1 << 20];
            int n;
            while ((n = in.read(buf)) > 0) md.update(buf, 0, n);
            StringBuilder sb = new StringBuilder();
            for (byte b : md.digest()) sb.append(String.format("%02x", b));
            return sb.toString();
        } catch (IOException | NoSuchAlgorithmException e) {
            throw new BundleError("cannot read " + f + ": " + e.getMessage());
        }
    }

    // ------------------------------------------------------------------------------------------------ accessors

    @SuppressWarnings("unchecked")
    private Map<String, Object> section(String key) {
        Object v = raw.get(key);
        return v instanceof Map ? (Map<String, Object>) v : new LinkedHashMap<>();
    }

    public Map<String, Object> tokenizer() {
        return section("tokenizer");
    }

    public File tokenizerFile() {
        return new File(root, (String) tokenizer().get("file"));
    }

    public String chatTemplate() {
        Object t = tokenizer().get("chat_template");
        return t instanceof String ? (String) t : null;
    }

    public String bosToken() {
        Object t = tokenizer().get("bos_token");
        return t instanceof String ? (String) t : "";
    }

    public String eosToken() {
        Object t = tokenizer().get("eos_token");
        return t instanceof String ? (String) t : "";
    }

    public int maxSeqLen() {
        return ((Number) section("model").get("max_seq_len")).intValue();
    }

    public String strategy() {
        return String.valueOf(raw.get("strategy"));
    }

    public String format() {
        return String.valueOf(raw.get("format"));
    }

    public Map<String, Object> versions() {
        return section("versions");
    }

    public Map<String, Object> files() {
        return section("files");
    }

    /** The retrieval embedder entry (program, tokenizer, dim, max_len, pooling, ...) or null. */
    @SuppressWarnings("unchecked")
    public Map<String, Object> embedder() {
        Object e = raw.get("embedder");
        return e instanceof Map ? (Map<String, Object>) e : null;
    }

    public OpEntry op(String name) {
        OpEntry e = ops.get(name);
        if (e == null) {
            List<String> names = new ArrayList<>(ops.keySet());
            names.sort(Py.CODE_POINT_ORDER);
            throw new BundleError("op " + Py.repr(name) + " is not in this bundle; ops: " + Py.repr(names));
        }
        return e;
    }

    public File programFile(String op) {
        return new File(root, op(op).program);
    }

    public List<File> dataFiles(String op) {
        List<File> out = new ArrayList<>();
        for (String f : op(op).dataFiles) out.add(new File(root, f));
        return out;
    }

    /** Bytes on disk an op needs: its program plus its data files (shared files counted in full). */
    public long opBytes(String op) {
        long n = 0;
        OpEntry e = op(op);
        List<String> names = new ArrayList<>();
        names.add(e.program);
        names.addAll(e.dataFiles);
        for (String f : names) n += ((Number) Json.obj(files().get(f), "files entry").get("bytes")).longValue();
        return n;
    }

    /** Bytes on disk an op needs on one backend ("executorch", "onnx"): that format's program, data files and adapter file. */
    public long opBytes(String op, String format) {
        Map<String, Object> b = op(op).backend(format);
        List<Object> names = new ArrayList<>();
        names.add(b.get("program"));
        if (b.get("data_files") != null) names.addAll(Json.arr(b.get("data_files"), "data_files"));
        Object af = b.get("adapter_file");
        if (af instanceof String && !((String) af).isEmpty() && !names.contains(af)) names.add(af);
        long n = 0;
        for (Object f : names) n += ((Number) Json.obj(files().get(f), "files entry").get("bytes")).longValue();
        return n;
    }

    /** The prompt text of an op's messages: the chat template applied as runtimes/base.py applies it. */
    public synchronized String renderPrompt(List<ChatMessage> messages) {
        String tpl = chatTemplate();
        if (tpl == null || tpl.isEmpty()) return ChatTemplate.apply(null, messages, bosToken(), eosToken());
        if (template == null) template = ChatTemplate.compile(tpl);
        return template.render(messages, true, bosToken(), eosToken());
    }

    // ------------------------------------------------------------------------------------------------ versions

    /** "1.5.1+cpu" -> "1.5.1": the release segment that decides program compatibility. */
    public static String release(String version) {
        String v = version.trim();
        int plus = v.indexOf('+');
        return plus >= 0 ? v.substring(0, plus) : v;
    }

    /**
     * Refuses a bundle exported with another version of the runtime the app links. {@code runtime} is the backend
     * ("executorch" or "onnxruntime") and {@code linkedVersion} the version of the library in the APK.
     * ExecuTorch: the release must be equal (a .pte is tied to its runtime). ONNX Runtime: the linked runtime must not be
     * older than the exporter's (newer runtimes read older models and adapters).
     */
    public void checkRuntimeVersion(String runtime, String linkedVersion) {
        Object exported = versions().get(runtime);
        if (!(exported instanceof String))
            throw new BundleError("the manifest records no " + runtime + " version (versions: " + Py.repr(new ArrayList<>(versions().keySet()))
                    + "); re-export the bundle with this memlora version");
        String have = release(linkedVersion), want = release((String) exported);
        if (runtime.equals("executorch")) {
            if (!have.equals(want))
                throw new BundleError("bundle programs were exported with executorch " + want + " but this app runs executorch-android "
                        + have + "; a .pte must run on the runtime version it was exported with: re-export with executorch==" + have
                        + " or build the app with executorch-android " + want);
        } else if (compareVersions(have, want) < 0) {
            throw new BundleError("bundle was exported with " + runtime + " " + want + " but this app runs " + runtime + " " + have
                    + "; build the app with " + runtime + " >= " + want);
        }
    }

    static int compareVersions(String a, String b) {
        String[] x = a.split("\\."), y = b.split("\\.");
        for (int i = 0; i < Math.max(x.length, y.length); i++) {
            int p = i < x.length ? leadingInt(x[i]) : 0, q = i < y.length ? leadingInt(y[i]) : 0;
            if (p != q) return Integer.compare(p, q);
        }
        return 0;
    }

    static int leadingInt(String s) {
        int i = 0;
        while (i < s.length() && Character.isDigit(s.charAt(i))) i++;
        return i == 0 ? 0 : Integer.parseInt(s.substring(0, i));
    }
}
