package org.memlora.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;

/**
 * The manifest's field checks, in runtimes/manifest.py {@code check_fields}' order (so both readers name the same
 * field for the same manifest), and schema 2's prompt fields (runtimes/chat.py {@code from_dict}): every field a
 * reader uses has its type, every file name is plain and listed; a failure is one line {@code <manifest>: <field>:
 * <problem>}.
 */
final class ManifestFields {
    private ManifestFields() {}

    static final long INT32 = Integer.MAX_VALUE, INT64 = Long.MAX_VALUE, INT64_MIN = Long.MIN_VALUE;

    /** runtimes/manifest.py {@code _Checker}: every error one line {@code <manifest>: <field>: <problem>}. */
    static final class Checker {
        final String where;
        Map<String, Object> files = new LinkedHashMap<>();

        Checker(String where) {
            this.where = where;
        }

        BundleError fail(String field, String problem) {
            return new BundleError(where + ": " + field + ": " + problem);
        }

        Object get(Map<String, Object> obj, String field, String key, boolean required) {
            if (required && !obj.containsKey(key)) throw fail(field.isEmpty() ? key : field + "." + key, "missing");
            return obj.get(key);
        }

        @SuppressWarnings("unchecked")
        Map<String, Object> obj(String field, Object v, boolean optional) {
            if (v == null && optional) return null;
            if (!(v instanceof Map)) throw fail(field, "expected an object, got " + JsonTree.kind(v));
            return (Map<String, Object>) v;
        }

        Map<String, Object> objOrEmpty(String field, Object v) {
            Map<String, Object> m = obj(field, v, true);
            return m == null ? new LinkedHashMap<>() : m;
        }

        String str(String field, Object v, boolean optional) {
            if (v == null && optional) return null;
            if (!(v instanceof String)) throw fail(field, "expected a string, got " + JsonTree.kind(v));
            return (String) v;
        }

        void integer(String field, Object v, long lo, long hi, boolean optional) {
            if (v == null && optional) return;
            if (!(v instanceof Long)) throw fail(field, "expected an integer, got " + JsonTree.kind(v));
            if ((Long) v < lo || (Long) v > hi) throw fail(field, v + " is out of range (" + lo + ".." + hi + ")");
        }

        void number(String field, Object v, double lo, double hi, boolean optional) {
            if (v == null && optional) return;
            if (!(v instanceof Number)) throw fail(field, "expected a number, got " + JsonTree.kind(v));
            double d = ((Number) v).doubleValue();
            if (!(!Double.isNaN(d) && !Double.isInfinite(d) && lo <= d && d <= hi))
                throw fail(field, v + " is out of range (" + lo + ".." + hi + ")");
        }

        @SuppressWarnings("unchecked")
        List<Object> list(String field, Object v, boolean optional) {
            if (v == null && optional) return null;
            if (!(v instanceof List)) throw fail(field, "expected an array, got " + JsonTree.kind(v));
            return (List<Object>) v;
        }

        /** A bundle file name: plain ({@link #NAME_RULE}) and listed in files. */
        void name(String field, Object v, boolean optional) {
            if (str(field, v, optional) == null) return;
            if (!Manifest.isPlainName(v)) throw fail(field, JsonTree.quote(v) + " is not " + Manifest.NAME_RULE);
            if (!files.containsKey(v)) throw fail(field, JsonTree.quote(v) + " is not listed in the manifest's files");
        }

        void names(String field, Object v) {
            List<Object> l = list(field, v, true);
            if (l != null) for (int i = 0; i < l.size(); i++) name(field + "[" + i + "]", l.get(i), false);
        }
    }

    /** runtimes/manifest.py {@code check_fields}, in the same order (so both name the same field). */
    static Checker check(Map<String, Object> raw, String where) {
        Checker c = new Checker(where);
        c.files = c.obj("files", raw.get("files"), false);
        Map<String, Object> model = c.obj("model", raw.get("model"), false);
        c.integer("model.max_seq_len", c.get(model, "model", "max_seq_len", true), 1, INT32, false);
        for (String k : Arrays.asList("vocab_size", "n_layers", "dim", "n_heads", "n_kv_heads", "head_dim", "hidden_dim"))
            c.integer("model." + k, model.get(k), 1, INT32, true);
        Map<String, Object> tok = c.obj("tokenizer", raw.get("tokenizer"), false);
        c.name("tokenizer.file", c.get(tok, "tokenizer", "file", true), false);
        for (String k : Arrays.asList("chat_template", "bos_token", "eos_token")) c.str("tokenizer." + k, tok.get(k), true);
        c.str("strategy", raw.get("strategy"), false);
        Map<String, Object> quant = c.obj("quantization", raw.get("quantization"), false);
        c.str("quantization.scheme", quant.get("scheme"), true);
        c.str("format", raw.get("format"), false);
        c.obj("versions", raw.get("versions"), false);
        for (Map.Entry<String, Object> op : c.obj("ops", raw.get("ops"), false).entrySet()) {
            String f = "ops." + op.getKey();
            Map<String, Object> e = c.obj(f, op.getValue(), false);
            c.name(f + ".program", c.get(e, f, "program", true), false);
            c.names(f + ".data_files", e.get("data_files"));
            c.str(f + ".prompt_template", c.get(e, f, "prompt_template", true), false);
            Map<String, Object> gen = c.objOrEmpty(f + ".generation", e.get("generation"));
            c.integer(f + ".generation.max_new_tokens", gen.get("max_new_tokens"), 0, INT32, true);
            c.number(f + ".generation.temperature", gen.get("temperature"), 0.0, 1e6, true);
            c.number(f + ".generation.top_p", gen.get("top_p"), 0.0, 1.0, true);
            List<Object> stops = c.list(f + ".stop_token_ids", e.get("stop_token_ids"), true);
            if (stops != null) for (int i = 0; i < stops.size(); i++) c.integer(f + ".stop_token_ids[" + i + "]", stops.get(i), 0, INT32, false);
            c.obj(f + ".adapter", e.get("adapter"), true);
            c.obj(f + ".fidelity", e.get("fidelity"), true);
            c.str(f + ".method", e.get("method"), true);
            for (Map.Entry<String, Object> b : c.objOrEmpty(f + ".backends", e.get("backends")).entrySet()) {
                String fb = f + ".backends." + b.getKey();
                Map<String, Object> be = c.obj(fb, b.getValue(), false);
                c.name(fb + ".program", c.get(be, fb, "program", true), false);
                c.names(fb + ".data_files", be.get("data_files"));
                c.name(fb + ".adapter_file", be.get("adapter_file"), true);
                c.str(fb + ".method", be.get("method"), true);
            }
        }
        for (Map.Entry<String, Object> b : c.objOrEmpty("backends", raw.get("backends")).entrySet()) {
            String fb = "backends." + b.getKey();
            Map<String, Object> info = c.obj(fb, b.getValue(), false);
            c.name(fb + ".genai_config", info.get("genai_config"), true);
            c.integer(fb + ".max_length", info.get("max_length"), 1, INT32, true);
            c.integer(fb + ".graph_id", info.get("graph_id"), INT64_MIN, INT64, true);
            for (Map.Entry<String, Object> in : c.objOrEmpty(fb + ".lora_inputs", info.get("lora_inputs")).entrySet()) {
                List<Object> shape = c.list(fb + ".lora_inputs." + in.getKey(), in.getValue(), false);
                for (int i = 0; i < shape.size(); i++)
                    c.integer(fb + ".lora_inputs." + in.getKey() + "[" + i + "]", shape.get(i), 0, INT64, true);
            }
            Map<String, Object> lora = c.objOrEmpty(fb + ".lora", info.get("lora"));
            c.str(fb + ".lora.dtype", lora.get("dtype"), true);
            for (Map.Entry<String, Object> n : c.objOrEmpty(fb + ".lora_blocks", info.get("lora_blocks")).entrySet())
                c.integer(fb + ".lora_blocks." + n.getKey(), n.getValue(), 1, INT32, false);
        }
        Map<String, Object> emb = c.obj("embedder", raw.get("embedder"), true);
        if (emb != null) {
            c.name("embedder.program", c.get(emb, "embedder", "program", true), false);
            c.name("embedder.tokenizer", c.get(emb, "embedder", "tokenizer", true), false);
            c.integer("embedder.dim", c.get(emb, "embedder", "dim", true), 1, INT32, false);
            c.integer("embedder.max_len", c.get(emb, "embedder", "max_len", true), 1, INT32, false);
            c.str("embedder.pooling", c.get(emb, "embedder", "pooling", true), false);
            c.str("embedder.method", emb.get("method"), true);
        }
        Map<String, Object> vis = c.obj("vision", raw.get("vision"), true);
        if (vis != null) {
            c.str("vision.op", c.get(vis, "vision", "op", true), false);
            if (vis.containsKey("program") || !vis.containsKey("onnx")) { // ExecuTorch's program: absent only in ONNX-only bundles
                c.name("vision.program", c.get(vis, "vision", "program", true), false);
                c.names("vision.data_files", vis.get("data_files"));
                Map<String, Object> methods = c.obj("vision.methods", c.get(vis, "vision", "methods", true), false);
                for (String k : Arrays.asList("image", "embed", "decode"))
                    c.str("vision.methods." + k, c.get(methods, "vision.methods", k, true), false);
            }
            Map<String, Object> image = c.obj("vision.image", c.get(vis, "vision", "image", true), false);
            c.integer("vision.image.size", c.get(image, "vision.image", "size", true), 1, 8192, false);
            for (String k : Arrays.asList("mean", "std")) {
                List<Object> values = c.list("vision.image." + k, c.get(image, "vision.image", k, true), false);
                if (values.size() != 3) throw c.fail("vision.image." + k, "expected 3 values (R, G, B)");
                for (int i = 0; i < 3; i++)
                    c.number("vision.image." + k + "[" + i + "]", values.get(i), k.equals("mean") ? -1e6 : 1e-9, 1e6, false);
            }
            c.integer("vision.visual_tokens", c.get(vis, "vision", "visual_tokens", true), 1, INT32, false);
            Map<String, Object> prompt = c.obj("vision.prompt", c.get(vis, "vision", "prompt", true), false);
            for (String k : Arrays.asList("before", "after"))
                c.str("vision.prompt." + k, c.get(prompt, "vision.prompt", k, true), false);
            Map<String, Object> gen = c.objOrEmpty("vision.generation", vis.get("generation"));
            c.integer("vision.generation.max_new_tokens", gen.get("max_new_tokens"), 1, INT32, true);
            String after = c.str("vision.generation.answer_after", gen.get("answer_after"), true);
            if (after != null && (after.isEmpty() || after.length() > 64))
                throw c.fail("vision.generation.answer_after", "expected 1 to 64 characters");
            List<Object> stops = c.list("vision.stop_token_ids", vis.get("stop_token_ids"), true);
            if (stops != null)
                for (int i = 0; i < stops.size(); i++) c.integer("vision.stop_token_ids[" + i + "]", stops.get(i), 0, INT32, false);
            Map<String, Object> vo = c.obj("vision.onnx", vis.get("onnx"), true); // the ONNX graphs (--format both)
            if (vo != null) {
                for (String k : Arrays.asList("encoder", "embed", "decoder", "adapter_file"))
                    c.name("vision.onnx." + k, c.get(vo, "vision.onnx", k, true), false);
                c.names("vision.onnx.data_files", vo.get("data_files"));
                c.integer("vision.onnx.graph_id", c.get(vo, "vision.onnx", "graph_id", true), 0, INT32, false);
                Map<String, Object> past = c.obj("vision.onnx.past", c.get(vo, "vision.onnx", "past", true), false);
                for (String k : Arrays.asList("layers", "kv_heads", "head_dim"))
                    c.integer("vision.onnx.past." + k, c.get(past, "vision.onnx.past", k, true), 1, 4096, false);
            }
        }
        for (Map.Entry<String, Object> e : c.files.entrySet()) {
            String name = e.getKey();
            if (!Manifest.isPlainName(name)) throw c.fail("files", JsonTree.quote(name) + " is not " + Manifest.NAME_RULE);
            String f = "files." + name;
            Map<String, Object> entry = c.obj(f, e.getValue(), false);
            c.integer(f + ".bytes", c.get(entry, f, "bytes", true), 0, INT64, false);
            String sha = c.str(f + ".sha256", c.get(entry, f, "sha256", true), false);
            if (!SHA256.matcher(sha).matches()) throw c.fail(f + ".sha256", "expected 64 lowercase hex digits");
        }
        return c;
    }

    /** runtimes/chat.py ChatFormat.from_dict and OpPrompt.from_dict: tokenizer.chat_format, then each op's prompt. */
    static ChatFormat checkPrompts(Map<String, Object> raw, Checker c) {
        String f = "tokenizer.chat_format";
        Map<String, Object> cf = c.obj(f, JsonTree.obj(raw.get("tokenizer"), "tokenizer").get("chat_format"), false);
        Map<String, Object> roles = c.obj(f + ".roles", cf.get("roles"), false);
        if (roles.isEmpty()) throw c.fail(f + ".roles", "expected at least one role");
        Map<String, String[]> framing = new LinkedHashMap<>();
        for (Map.Entry<String, Object> r : roles.entrySet()) {
            String fr = f + ".roles." + r.getKey();
            Map<String, Object> ba = c.obj(fr, r.getValue(), false);
            framing.put(r.getKey(), new String[] {c.str(fr + ".before", ba.get("before"), false), c.str(fr + ".after", ba.get("after"), false)});
        }
        String gp = c.str(f + ".generation_prompt", cf.get("generation_prompt"), false);
        String ds = c.str(f + ".default_system", cf.get("default_system"), true);
        Object sp = cf.containsKey("add_special_tokens") ? cf.get("add_special_tokens") : Boolean.FALSE;
        if (!(sp instanceof Boolean)) throw c.fail(f + ".add_special_tokens", "expected true or false, got " + JsonTree.kind(sp));
        for (Map.Entry<String, Object> op : JsonTree.obj(raw.get("ops"), "ops").entrySet()) {
            String fp = "ops." + op.getKey() + ".prompt";
            Map<String, Object> p = c.obj(fp, JsonTree.obj(op.getValue(), "op").get("prompt"), false);
            for (String k : Arrays.asList("id", "system", "user")) c.str(fp + "." + k, p.get(k), false);
            List<Object> fields = c.list(fp + ".fields", p.get("fields"), false);
            List<String> names = new ArrayList<>();
            for (int i = 0; i < fields.size(); i++) names.add(c.str(fp + ".fields[" + i + "]", fields.get(i), false));
            String problem = OpPrompt.problem((String) p.get("user"), names);
            if (problem != null) throw c.fail(fp + ".user", problem);
        }
        return new ChatFormat(framing, gp, ds, (Boolean) sp);
    }

    static final Pattern SHA256 = Pattern.compile("[0-9a-f]{64}");
}
