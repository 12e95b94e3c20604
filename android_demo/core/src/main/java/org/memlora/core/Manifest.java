package org.memlora.core;

import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The bundle manifest (schema 2), read as runtimes/manifest.py {@code load_manifest} reads it: the same required keys,
 * schema check, field types (a refused manifest is one line naming the field), file size + sha256 verification and
 * op -> file checks. Schema 2 carries the prompts as data (tokenizer.chat_format, ops.*.prompt: {@link ChatFormat},
 * {@link OpPrompt}); the app has no template engine, so a schema 1 bundle is refused with a line saying to re-export
 * it. A bundle is a closed world: every file name is a plain name ({@link #NAME_RULE}) listed in {@code files} and
 * resolving inside the bundle directory; open bundle files only through {@link #file(String)}, which checks that again
 * (tests/data/hostile_manifests.json holds both readers to the same verdicts). On top, {@link #checkRuntimeVersion}
 * refuses a bundle whose programs were exported with another ExecuTorch version than the runtime the app links.
 */
public final class Manifest {
    public static final int SCHEMA_VERSION = 2;
    public static final String MANIFEST = "manifest.json";
    public static final List<String> REQUIRED = Arrays.asList("schema_version", "model", "tokenizer", "strategy",
            "quantization", "format", "versions", "ops", "files");
    static final Set<String> KNOWN = new HashSet<>(REQUIRED);

    static {
        KNOWN.addAll(Arrays.asList("tool", "created_utc", "spec", "export", "backends", "embedder", "target", "vision"));
    }

    /** One memory operation: its program, data files, prompt and generation defaults. */
    public static final class OpEntry {
        public final String name;
        public final String program;
        public final List<String> dataFiles;
        /** The template id the prompt was exported from (informational: {@link #prompt} is what is sent). */
        public final String promptTemplate;
        public final OpPrompt prompt;
        public final Map<String, Object> generation;
        public final List<Long> stopTokenIds;
        public final Map<String, Object> adapter; // null when the op has none
        /** Per format ("executorch", "onnx") this op's {program, data_files, adapter_file} in multi-format bundles. */
        public final Map<String, Map<String, Object>> backends;
        public final Map<String, Object> raw;

        /** From an op entry that {@link ManifestFields} checked (so the casts hold). */
        @SuppressWarnings("unchecked")
        OpEntry(String name, Map<String, Object> op) {
            this.name = name;
            this.raw = op;
            this.program = (String) op.get("program");
            this.dataFiles = listOf(op.get("data_files"));
            this.promptTemplate = (String) op.get("prompt_template");
            Map<String, Object> p = (Map<String, Object>) op.get("prompt");
            this.prompt = new OpPrompt((String) p.get("id"), (String) p.get("system"), (String) p.get("user"), listOf(p.get("fields")));
            this.generation = op.get("generation") == null ? new LinkedHashMap<>() : (Map<String, Object>) op.get("generation");
            this.stopTokenIds = listOf(op.get("stop_token_ids"));
            this.adapter = (Map<String, Object>) op.get("adapter");
            this.backends = op.get("backends") == null ? new LinkedHashMap<>() : (Map<String, Map<String, Object>>) op.get("backends");
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

    @SuppressWarnings("unchecked")
    private static <T> List<T> listOf(Object v) {
        return v == null ? Collections.emptyList() : Collections.unmodifiableList(new ArrayList<>((List<T>) v));
    }

    public final File root;
    public final Map<String, Object> raw;
    public final Map<String, OpEntry> ops = new LinkedHashMap<>();
    public final List<String> warnings = new ArrayList<>();
    private final ChatFormat chatFormat;

    private Manifest(File root, Map<String, Object> raw, ChatFormat chatFormat) {
        this.root = root;
        this.raw = raw;
        this.chatFormat = chatFormat;
        for (Map.Entry<String, Object> e : section("ops").entrySet()) ops.put(e.getKey(), new OpEntry(e.getKey(), JsonTree.obj(e.getValue(), "op")));
    }

    /** {@code load_manifest(bundle, verify)}: the same checks in the same order. */
    public static Manifest load(File bundle, boolean verify) {
        File path = new File(bundle, MANIFEST);
        if (!path.isFile()) throw new BundleError(bundle.getPath() + " is not a memlora bundle: " + MANIFEST + " not found");
        Path rootReal = realPath(bundle.toPath());
        if (!inside(rootReal, path)) throw new BundleError(path.getPath() + ": " + MANIFEST + " leads outside the bundle (a link)");
        String text;
        try {
            // A fresh decoder refuses malformed input, as Python's bytes.decode("utf-8") does.
            text = StandardCharsets.UTF_8.newDecoder().decode(ByteBuffer.wrap(Files.readAllBytes(path.toPath()))).toString();
        } catch (CharacterCodingException e) {
            throw new BundleError(path.getPath() + ": invalid JSON: not UTF-8 text");
        } catch (IOException e) {
            throw new BundleError(path.getPath() + ": cannot read: " + e.getMessage());
        }
        Object parsed;
        try {
            parsed = JsonTree.parse(text);
        } catch (IllegalArgumentException e) {
            throw new BundleError(path.getPath() + ": " + e.getMessage());
        }
        if (!(parsed instanceof Map)) throw new BundleError(path.getPath() + ": the manifest is not a JSON object");
        Map<String, Object> raw = JsonTree.obj(parsed, "manifest");
        List<String> missing = new ArrayList<>(REQUIRED);
        missing.removeAll(raw.keySet());
        if (!missing.isEmpty()) throw new BundleError(path.getPath() + ": missing required keys " + missing);
        Object sv = raw.get("schema_version");
        if (!(sv instanceof Long)) throw new BundleError(path.getPath() + ": schema_version: expected an integer, got " + JsonTree.kind(sv));
        if ((Long) sv != SCHEMA_VERSION)
            throw new BundleError(path.getPath() + ": schema_version " + sv + " is not supported (this app reads " + SCHEMA_VERSION
                    + ((Long) sv < SCHEMA_VERSION ? ": prompts carried as data, no chat template engine); re-export the bundle with this memlora version"
                    : "); update the app to run it"));
        List<String> unknown = new ArrayList<>(raw.keySet());
        unknown.removeAll(KNOWN);
        unknown.sort(Text.CODE_POINT_ORDER);
        ManifestFields.Checker c = ManifestFields.check(raw, path.getPath());
        for (String name : c.files.keySet())
            if (!inside(rootReal, new File(bundle, name))) throw new BundleError("bundle file " + name + " leads outside the bundle (a link)");
        if (verify) {
            for (Map.Entry<String, Object> e : c.files.entrySet()) {
                String name = e.getKey();
                Map<String, Object> entry = JsonTree.obj(e.getValue(), "files entry");
                File f = new File(bundle, name);
                if (!f.isFile()) throw new BundleError("bundle file missing: " + name);
                if (f.length() != (Long) entry.get("bytes"))
                    throw new BundleError("bundle file " + name + ": " + f.length() + " bytes, manifest says " + entry.get("bytes") + " (truncated?)");
                if (!sha256(f).equals(entry.get("sha256"))) throw new BundleError("bundle file " + name + ": sha256 mismatch (corrupted or modified)");
            }
        }
        Manifest m = new Manifest(bundle, raw, ManifestFields.checkPrompts(raw, c));
        if (!unknown.isEmpty()) m.warnings.add(path.getPath() + ": unknown keys " + unknown + " ignored");
        return m;
    }

    // ------------------------------------------------------------------------------------------------ closed world

    /** runtimes/manifest.py NAME_RULE: the only file names a manifest may give. */
    public static final String NAME_RULE =
            "a plain file name in the bundle (no '/', '\\', ':' or control characters; not '.' or '..'; 1-255 bytes)";

    /** A name that can only mean a file directly inside the bundle directory, on any OS ({@link #NAME_RULE}). */
    public static boolean isPlainName(Object v) {
        if (!(v instanceof String)) return false;
        String s = (String) v;
        if (s.isEmpty() || s.equals(".") || s.equals("..")) return false;
        int bytes = 0;
        for (int i = 0; i < s.length(); ) {
            int cp = s.codePointAt(i);
            if (cp >= 0xD800 && cp <= 0xDFFF) return false; // a lone surrogate: not text, not a file name
            if (cp == '/' || cp == '\\' || cp == ':' || cp < 0x20 || cp == 0x7F) return false;
            bytes += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
            i += Character.charCount(cp);
        }
        return bytes <= 255;
    }

    /**
     * The bundle file {@code name}, after the checks runtimes/manifest.py's {@code Manifest.path} makes: a plain name
     * ({@link #NAME_RULE}) that the manifest's files list, resolving (symlinks followed) inside the bundle directory,
     * and a regular file. The one way to open a bundle file: with {@code load(dir, true)} its size and sha256 were
     * checked too.
     */
    public File file(String name) {
        if (!isPlainName(name)) throw new BundleError(JsonTree.quote(name) + " is not " + NAME_RULE);
        if (!files().containsKey(name))
            throw new BundleError(JsonTree.quote(name) + " is not a file of this bundle (the manifest's files do not list it)");
        File f = new File(root, name);
        if (!inside(realPath(root.toPath()), f)) throw new BundleError("bundle file " + name + " leads outside the bundle (a link)");
        if (!f.isFile()) throw new BundleError("bundle file missing: " + name);
        return f;
    }

    static boolean inside(Path rootReal, File f) {
        Path real = realPath(f.toPath());
        return !real.equals(rootReal) && real.startsWith(rootReal);
    }

    /**
     * Python's {@code os.path.realpath} (non-strict): links followed as far as they lead, a missing rest kept as
     * written, a link loop left as it is. {@code toRealPath} alone refuses a dangling link, and
     * {@code File.getCanonicalPath} keeps its own name (so a link to a missing file outside the bundle looks inside).
     */
    static Path realPath(Path p) {
        p = p.toAbsolutePath();
        for (int links = 0; ; links++) {
            try {
                return p.toRealPath();
            } catch (IOException e) {
                // missing, a dangling link or a loop: resolved by hand below
            }
            try {
                if (links < 40 && Files.isSymbolicLink(p)) {
                    p = p.resolveSibling(Files.readSymbolicLink(p));
                    continue;
                }
            } catch (IOException e) {
                // unreadable link: kept as it is
            }
            Path parent = p.getParent();
            if (parent == null) return p;
            Path dir = realPath(parent);
            String name = p.getFileName().toString();
            if (name.equals("..")) return dir.getParent() != null ? dir.getParent() : dir;
            return name.equals(".") ? dir : dir.resolve(name);
        }
    }

    public static String sha256(File f) {
        try (InputStream in = new FileInputStream(f)) {
            MessageDigest md = MessageDigest.getInstance("SHA-256");
            byte[] buf = new byte[1 << 20];
            for (int n; (n = in.read(buf)) > 0; ) md.update(buf, 0, n);
            return String.format("%064x", new BigInteger(1, md.digest()));
        } catch (IOException | NoSuchAlgorithmException e) {
            throw new BundleError("cannot read " + f + ": " + e.getMessage());
        }
    }

    // ------------------------------------------------------------------------------------------------ accessors

    /** A section load checked to be an object (an empty map for an absent optional one). */
    @SuppressWarnings("unchecked")
    private Map<String, Object> section(String key) {
        Object v = raw.get(key);
        return v instanceof Map ? (Map<String, Object>) v : new LinkedHashMap<>();
    }

    public Map<String, Object> tokenizer() {
        return section("tokenizer");
    }

    /** The tokenizer file, through the checked accessor {@link #file(String)}. */
    public File tokenizerFile() {
        return file((String) tokenizer().get("file"));
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

    /** MemLoRA-V's vision op (the manifest's vision section, checked at load): what ExecuTorch's multimodal runner
     *  needs to run it, as runtimes/vision.py runs it. */
    public static final class Vision {
        public final String program; // null: the op is ONNX graphs only (--format onnx)
        public final List<String> dataFiles;
        public final int imageSize;
        public final String before, after; // the prompt around the image; after holds {question}
        public final int maxNewTokens;
        public final String answerAfter; // the op names what it sees, then this, then the answer (null: answer only)

        Vision(String program, List<String> dataFiles, int imageSize, String before, String after, int maxNewTokens,
               String answerAfter) {
            this.program = program;
            this.dataFiles = dataFiles;
            this.imageSize = imageSize;
            this.before = before;
            this.after = after;
            this.maxNewTokens = maxNewTokens;
            this.answerAfter = answerAfter;
        }

        /** The text after the image with the question in its slot. */
        public String after(String question) {
            return after.replace("{question}", Text.strip(question));
        }

        /** The op's answer in its generated text: what follows the last answerAfter ("blue, so yes" -> "yes"), as
         *  runtimes/vision.py answers. */
        public String finalAnswer(String text) {
            int at = answerAfter == null ? -1 : text.lastIndexOf(answerAfter);
            return Text.strip(at < 0 ? text : text.substring(at + answerAfter.length()));
        }
    }

    /** The vision op, or null when the bundle has none (exported without --vision). */
    @SuppressWarnings("unchecked")
    public Vision vision() {
        if (raw.get("vision") == null) return null;
        Map<String, Object> v = section("vision");
        List<String> data = new ArrayList<>();
        Object df = v.get("data_files");
        if (df instanceof List) for (Object o : (List<Object>) df) data.add((String) o);
        Map<String, Object> image = (Map<String, Object>) v.get("image");
        Map<String, Object> prompt = (Map<String, Object>) v.get("prompt");
        Object gen = v.get("generation");
        Object n = gen instanceof Map ? ((Map<String, Object>) gen).get("max_new_tokens") : null;
        Object answerAfter = gen instanceof Map ? ((Map<String, Object>) gen).get("answer_after") : null;
        return new Vision((String) v.get("program"), data, ((Long) image.get("size")).intValue(), (String) prompt.get("before"),
                (String) prompt.get("after"), n instanceof Long ? ((Long) n).intValue() : 8, (String) answerAfter);
    }

    /** The retrieval embedder entry (program, tokenizer, dim, max_len, pooling, ...) or null. */
    public Map<String, Object> embedder() {
        return raw.get("embedder") == null ? null : section("embedder");
    }

    public OpEntry op(String name) {
        OpEntry e = ops.get(name);
        if (e == null) {
            List<String> names = new ArrayList<>(ops.keySet());
            names.sort(Text.CODE_POINT_ORDER);
            throw new BundleError("op '" + name + "' is not in this bundle; ops: " + names);
        }
        return e;
    }

    /** Bytes on disk an op needs on one backend ("executorch", "onnx"): that format's program, data files and adapter
     *  file, each counted once. */
    public long opBytes(String op, String format) {
        Map<String, Object> b = op(op).backend(format);
        Set<Object> names = new LinkedHashSet<>();
        names.add(b.get("program"));
        names.addAll(listOf(b.get("data_files")));
        names.add(b.get("adapter_file"));
        names.remove(null);
        long n = 0;
        for (Object f : names) n += (Long) JsonTree.obj(files().get(f), "files entry").get("bytes");
        return n;
    }

    /** How the model frames messages (tokenizer.chat_format). */
    public ChatFormat chatFormat() {
        return chatFormat;
    }

    /** The prompt text of an op's messages, framed as runtimes/base.py frames them ({@link ChatFormat#render}). */
    public String renderPrompt(List<ChatMessage> messages) {
        return chatFormat.render(messages);
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
            throw new BundleError("the manifest records no " + runtime + " version (versions: " + versions().keySet()
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
