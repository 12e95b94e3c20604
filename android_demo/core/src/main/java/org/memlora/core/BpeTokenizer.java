package org.memlora.core;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.text.Normalizer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.function.UnaryOperator;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The language model's tokenizer on the phone for ONNX bundles (ExecuTorch's LlmModule tokenizes natively; the plain
 * ONNX Runtime Java API has no tokenizer): a byte-level BPE {@code tokenizer.json} applied as Hugging Face tokenizers
 * applies it with {@code encode(text, add_special_tokens=False)} and {@code decode(ids, skip_special_tokens)}, which is
 * what runtimes/base.py calls. Supported: added / special tokens (split out first, leftmost-longest, with lstrip /
 * rstrip / single_word), normalizers NFC / NFD / NFKC / NFKD / Lowercase (and Sequences of them), pre-tokenizers
 * ByteLevel (GPT-2 regex, add_prefix_space) and Split (regex or string; Isolated / Removed / MergedWithPrevious /
 * MergedWithNext) in Sequences, the BPE model (merges as "a b" strings or pairs, ignore_merges) and the ByteLevel
 * decoder. SmolLM2 (ByteLevel) and Llama-3 / Qwen-style tokenizers (Split + ByteLevel) are of this kind; anything
 * else (SentencePiece-style Metaspace, byte fallback, WordPiece) is refused at load with the component named.
 * The JVM tests hold encode and decode to the Python library's output (runtimes/memory/vectors.py, bpe.json).
 */
public final class BpeTokenizer {
    /** GPT-2's pre-tokenization regex, as tokenizers' ByteLevel pre-tokenizer uses it (use_regex=true). */
    static final String GPT2_PATTERN = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
    private static final int CACHE_MAX = 20000;

    /** One added (special or not) token of tokenizer.json's {@code added_tokens}. */
    static final class Added {
        final int id;
        final String content;
        final boolean special, lstrip, rstrip, singleWord, normalized;

        Added(Map<String, Object> m) {
            id = ((Number) m.get("id")).intValue();
            content = (String) m.get("content");
            special = Boolean.TRUE.equals(m.get("special"));
            lstrip = Boolean.TRUE.equals(m.get("lstrip"));
            rstrip = Boolean.TRUE.equals(m.get("rstrip"));
            singleWord = Boolean.TRUE.equals(m.get("single_word"));
            normalized = Boolean.TRUE.equals(m.get("normalized"));
        }
    }

    /** A pre-tokenizer step: splits every piece into pieces. */
    private interface PreStep {
        List<String> split(String piece);
    }

    private final Map<String, Integer> vocab = new HashMap<>();
    private final String[] idToToken;
    private final Map<Long, int[]> merges = new HashMap<>(); // (left id << 32 | right id) -> {rank, merged id}
    private final boolean ignoreMerges;
    private final Map<Integer, Added> added = new LinkedHashMap<>(); // by id, in the file's order
    // Added tokens by first character, for the raw-text pass (normalized=false) and the normalized pass.
    private final Map<Character, List<Added>> addedRaw = new HashMap<>(), addedNormalized = new HashMap<>();
    private final List<UnaryOperator<String>> normalizers = new ArrayList<>();
    private final List<PreStep> preSteps = new ArrayList<>();
    private boolean byteLevel; // pre-tokenized pieces are mapped to byte-level characters
    private final boolean byteLevelDecoder;
    private final Map<String, int[]> cache = new HashMap<>();

    // GPT-2's bytes_to_unicode table and its inverse.
    static final char[] BYTE_CHAR = new char[256];
    static final Map<Character, Integer> CHAR_BYTE = new HashMap<>();

    static {
        int n = 0;
        for (int b = 0; b < 256; b++) {
            boolean keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            BYTE_CHAR[b] = keep ? (char) b : (char) (256 + n++);
            CHAR_BYTE.put(BYTE_CHAR[b], b);
        }
    }

    public static BpeTokenizer load(File tokenizerJson) {
        try {
            String text = new String(Files.readAllBytes(tokenizerJson.toPath()), StandardCharsets.UTF_8);
            return fromJson(JsonTree.obj(JsonTree.parse(text), "tokenizer.json"));
        } catch (IOException e) {
            throw new BundleError("cannot read the tokenizer " + tokenizerJson + ": " + e.getMessage());
        } catch (IllegalArgumentException | ClassCastException e) {
            throw new BundleError(tokenizerJson.getName() + ": " + e.getMessage());
        }
    }

    public static BpeTokenizer fromJson(Map<String, Object> tok) {
        return new BpeTokenizer(tok);
    }

    @SuppressWarnings("unchecked")
    private BpeTokenizer(Map<String, Object> tok) {
        Map<String, Object> model = JsonTree.obj(tok.get("model"), "model");
        if (!"BPE".equals(model.get("type")))
            throw new IllegalArgumentException("tokenizer model '" + model.get("type") + "' is not supported (byte-level BPE only)");
        if (Boolean.TRUE.equals(model.get("byte_fallback")))
            throw new IllegalArgumentException("BPE byte_fallback (SentencePiece-style tokenizers) is not supported");
        for (String k : Arrays.asList("continuing_subword_prefix", "end_of_word_suffix")) {
            Object v = model.get(k);
            if (v instanceof String && !((String) v).isEmpty())
                throw new IllegalArgumentException("BPE " + k + " '" + v + "' is not supported");
        }
        if (model.get("dropout") instanceof Number && ((Number) model.get("dropout")).doubleValue() > 0)
            throw new IllegalArgumentException("BPE dropout is not supported");
        ignoreMerges = Boolean.TRUE.equals(model.get("ignore_merges"));
        int maxId = -1;
        for (Map.Entry<String, Object> e : JsonTree.obj(model.get("vocab"), "vocab").entrySet()) {
            int id = ((Number) e.getValue()).intValue();
            vocab.put(e.getKey(), id);
            maxId = Math.max(maxId, id);
        }
        if (tok.get("added_tokens") != null)
            for (Object o : JsonTree.arr(tok.get("added_tokens"), "added_tokens")) {
                Added a = new Added(JsonTree.obj(o, "added token"));
                added.put(a.id, a);
                if (!a.content.isEmpty())
                    (a.normalized ? addedNormalized : addedRaw).computeIfAbsent(a.content.charAt(0), k -> new ArrayList<>()).add(a);
                maxId = Math.max(maxId, a.id);
            }
        idToToken = new String[maxId + 1];
        for (Map.Entry<String, Integer> e : vocab.entrySet()) idToToken[e.getValue()] = e.getKey();
        List<Object> mergeList = JsonTree.arr(model.get("merges"), "merges");
        for (int rank = 0; rank < mergeList.size(); rank++) {
            Object m = mergeList.get(rank);
            String a, b;
            if (m instanceof String) {
                String s = (String) m;
                int sp = s.indexOf(' ', 1);
                if (sp < 0) throw new IllegalArgumentException("merge '" + s + "' is not two tokens");
                a = s.substring(0, sp);
                b = s.substring(sp + 1);
            } else {
                List<Object> pair = JsonTree.arr(m, "merge");
                a = (String) pair.get(0);
                b = (String) pair.get(1);
            }
            Integer ia = vocab.get(a), ib = vocab.get(b), ab = vocab.get(a + b);
            if (ia == null || ib == null || ab == null)
                throw new IllegalArgumentException("merge '" + a + " " + b + "' names a token the vocabulary lacks");
            merges.putIfAbsent(pairKey(ia, ib), new int[] {rank, ab});
        }
        addNormalizer(tok.get("normalizer"));
        addPreTokenizer(tok.get("pre_tokenizer"));
        byteLevelDecoder = decoderIsByteLevel(tok.get("decoder"));
    }

    private static long pairKey(int a, int b) {
        return ((long) a << 32) | (b & 0xffffffffL);
    }

    private void addNormalizer(Object n) {
        if (n == null) return;
        Map<String, Object> m = JsonTree.obj(n, "normalizer");
        String type = (String) m.get("type");
        if ("Sequence".equals(type)) {
            for (Object o : JsonTree.arr(m.get("normalizers"), "normalizers")) addNormalizer(o);
        } else if ("Lowercase".equals(type)) {
            normalizers.add(s -> s.toLowerCase(Locale.ROOT));
        } else if (Arrays.asList("NFC", "NFD", "NFKC", "NFKD").contains(type)) {
            Normalizer.Form form = Normalizer.Form.valueOf(type);
            normalizers.add(s -> Normalizer.normalize(s, form));
        } else {
            throw new IllegalArgumentException("normalizer '" + type + "' is not supported (NFC/NFD/NFKC/NFKD/Lowercase)");
        }
    }

    private void addPreTokenizer(Object p) {
        if (p == null) return;
        Map<String, Object> m = JsonTree.obj(p, "pre_tokenizer");
        String type = (String) m.get("type");
        switch (type) {
            case "Sequence":
                for (Object o : JsonTree.arr(m.get("pretokenizers"), "pretokenizers")) addPreTokenizer(o);
                return;
            case "ByteLevel": {
                if (byteLevel) throw new IllegalArgumentException("two ByteLevel pre-tokenizers");
                byteLevel = true;
                final boolean prefix = Boolean.TRUE.equals(m.get("add_prefix_space"));
                final boolean regex = !Boolean.FALSE.equals(m.get("use_regex"));
                final Pattern pat = regex ? Pattern.compile(GPT2_PATTERN, Pattern.UNICODE_CHARACTER_CLASS) : null;
                preSteps.add(piece -> {
                    String s = prefix && !piece.startsWith(" ") ? " " + piece : piece;
                    return pat == null ? Collections.singletonList(s) : split(pat, s, "Isolated");
                });
                return;
            }
            case "Split": {
                if (Boolean.TRUE.equals(m.get("invert"))) throw new IllegalArgumentException("Split with invert=true is not supported");
                Map<String, Object> pat = JsonTree.obj(m.get("pattern"), "Split pattern");
                final Pattern re = pat.containsKey("Regex") ? Pattern.compile((String) pat.get("Regex"), Pattern.UNICODE_CHARACTER_CLASS)
                        : Pattern.compile(Pattern.quote((String) pat.get("String")));
                final String behavior = String.valueOf(m.get("behavior"));
                if (!Arrays.asList("Isolated", "Removed", "MergedWithPrevious", "MergedWithNext").contains(behavior))
                    throw new IllegalArgumentException("Split behavior '" + behavior + "' is not supported");
                preSteps.add(piece -> split(re, piece, behavior));
                return;
            }
            default:
                throw new IllegalArgumentException("pre-tokenizer '" + type + "' is not supported (ByteLevel, Split, Sequence)");
        }
    }

    private static boolean decoderIsByteLevel(Object d) {
        if (d == null) return false;
        Map<String, Object> m = JsonTree.obj(d, "decoder");
        String type = (String) m.get("type");
        if ("ByteLevel".equals(type)) return true;
        if ("Sequence".equals(type)) {
            List<Object> ds = JsonTree.arr(m.get("decoders"), "decoders");
            if (ds.size() == 1) return decoderIsByteLevel(ds.get(0));
        }
        throw new IllegalArgumentException("decoder '" + type + "' is not supported (ByteLevel)");
    }

    /** tokenizers' split with a SplitDelimiterBehavior: the matches and the text between them, empty pieces dropped. */
    static List<String> split(Pattern p, String s, String behavior) {
        List<String> out = new ArrayList<>();
        Matcher m = p.matcher(s);
        int prev = 0;
        String carry = ""; // MergedWithNext: the last match, waiting for the text after it
        while (m.find()) {
            if (m.end() == m.start()) continue; // empty matches split nothing
            String gap = s.substring(prev, m.start());
            prev = m.end();
            switch (behavior) {
                case "Isolated":
                    addPiece(out, gap);
                    addPiece(out, m.group());
                    break;
                case "Removed":
                    addPiece(out, gap);
                    break;
                case "MergedWithPrevious":
                    addPiece(out, gap + m.group());
                    break;
                default: // MergedWithNext
                    addPiece(out, carry + gap);
                    carry = m.group();
            }
        }
        addPiece(out, carry + s.substring(prev));
        return out;
    }

    private static void addPiece(List<String> pieces, String piece) {
        if (!piece.isEmpty()) pieces.add(piece);
    }

    // ------------------------------------------------------------------------------------------------ encode

    /** {@code Tokenizer.encode(text, add_special_tokens=False).ids}. */
    public int[] encode(String text) {
        List<Integer> ids = new ArrayList<>();
        // Pass 1: added tokens matched on the raw text (normalized=false); pass 2: the others, on normalized text.
        for (Object[] seg : splitAdded(text, false)) {
            if (seg[1] != null) {
                ids.add((Integer) seg[1]);
                continue;
            }
            String norm = normalize((String) seg[0]);
            for (Object[] seg2 : splitAdded(norm, true)) {
                if (seg2[1] != null) ids.add((Integer) seg2[1]);
                else encodeNormalized((String) seg2[0], ids);
            }
        }
        return ids.stream().mapToInt(Integer::intValue).toArray();
    }

    private String normalize(String s) {
        for (UnaryOperator<String> n : normalizers) s = n.apply(s);
        return s;
    }

    /** Splits out the added tokens whose {@code normalized} flag is {@code normalizedPass}: {text, null} or {content, id}. */
    private List<Object[]> splitAdded(String s, boolean normalizedPass) {
        List<Object[]> out = new ArrayList<>();
        int pos = 0, textStart = 0;
        while (pos < s.length()) {
            Added best = null;
            List<Added> candidates = (normalizedPass ? addedNormalized : addedRaw).get(s.charAt(pos));
            if (candidates != null)
                for (Added a : candidates)
                    if (s.startsWith(a.content, pos) && (best == null || a.content.length() > best.content.length())) best = a;
            if (best == null) {
                pos++;
                continue;
            }
            int start = pos, end = pos + best.content.length();
            if (best.singleWord && ((start > 0 && isWordChar(s.codePointBefore(start)))
                    || (end < s.length() && isWordChar(s.codePointAt(end))))) {
                pos = end; // tokenizers' matcher resumes after a rejected match
                continue;
            }
            if (best.lstrip) while (start > textStart && Text.isWhiteSpace(s.charAt(start - 1))) start--;
            if (best.rstrip) while (end < s.length() && Text.isWhiteSpace(s.charAt(end))) end++;
            if (start > textStart) out.add(new Object[] {s.substring(textStart, start), null});
            out.add(new Object[] {best.content, best.id});
            pos = textStart = end;
        }
        if (textStart < s.length()) out.add(new Object[] {s.substring(textStart), null});
        return out;
    }

    private static final Pattern WORD_CHAR = Pattern.compile("\\w", Pattern.UNICODE_CHARACTER_CLASS);

    /** A Unicode {@code \w} character (UTS #18: alphabetic, marks, decimal digits, connector punctuation, joiners): the
     *  word test tokenizers applies around single_word tokens. */
    private static boolean isWordChar(int cp) {
        return WORD_CHAR.matcher(new String(Character.toChars(cp))).matches();
    }

    private void encodeNormalized(String s, List<Integer> ids) {
        List<String> pieces = Collections.singletonList(s);
        for (PreStep step : preSteps) {
            List<String> next = new ArrayList<>();
            for (String p : pieces) next.addAll(step.split(p));
            pieces = next;
        }
        for (String p : pieces) {
            String word = byteLevel ? toByteChars(p) : p;
            for (int id : word(word)) ids.add(id);
        }
    }

    static String toByteChars(String s) {
        byte[] bytes = s.getBytes(StandardCharsets.UTF_8);
        StringBuilder sb = new StringBuilder(bytes.length);
        for (byte b : bytes) sb.append(BYTE_CHAR[b & 0xff]);
        return sb.toString();
    }

    /** BPE on one pre-token: its characters merged by merge rank, lowest first, leftmost first among equals. */
    private synchronized int[] word(String w) {
        int[] hit = cache.get(w);
        if (hit != null) return hit;
        Integer whole = vocab.get(w);
        int[] out;
        if (ignoreMerges && whole != null) out = new int[] {whole};
        else {
            List<Integer> sym = new ArrayList<>();
            for (int i = 0; i < w.length(); ) {
                int cp = w.codePointAt(i);
                String ch = new String(Character.toChars(cp));
                Integer id = vocab.get(ch);
                if (id != null) sym.add(id); // a character the vocabulary lacks (no unk token) is dropped, as in tokenizers
                i += Character.charCount(cp);
            }
            while (sym.size() > 1) {
                int[] best = null;
                int at = -1;
                for (int i = 0; i + 1 < sym.size(); i++) {
                    int[] merge = merges.get(pairKey(sym.get(i), sym.get(i + 1)));
                    if (merge != null && (best == null || merge[0] < best[0])) {
                        best = merge;
                        at = i;
                    }
                }
                if (best == null) break;
                sym.set(at, best[1]);
                sym.remove(at + 1);
            }
            out = sym.stream().mapToInt(Integer::intValue).toArray();
        }
        if (cache.size() >= CACHE_MAX) cache.clear();
        cache.put(w, out);
        return out;
    }

    // ------------------------------------------------------------------------------------------------ decode

    /** {@code Tokenizer.decode(ids, skip_special_tokens)}. */
    public String decode(int[] ids, boolean skipSpecial) {
        List<String> tokens = new ArrayList<>();
        for (int id : ids) {
            Added a = added.get(id);
            if (a != null) {
                if (skipSpecial && a.special) continue;
                tokens.add(a.content);
            } else if (id >= 0 && id < idToToken.length && idToToken[id] != null) tokens.add(idToToken[id]);
        }
        if (!byteLevelDecoder) return String.join("", tokens);
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        for (String t : tokens) {
            byte[] mapped = new byte[t.length()];
            boolean all = true;
            for (int i = 0; i < t.length() && all; i++) {
                Integer b = CHAR_BYTE.get(t.charAt(i));
                if (b == null) all = false;
                else mapped[i] = (byte) (int) b;
            }
            byte[] raw = all ? mapped : t.getBytes(StandardCharsets.UTF_8);
            bytes.write(raw, 0, raw.length);
        }
        return new String(bytes.toByteArray(), StandardCharsets.UTF_8); // invalid UTF-8 -> U+FFFD, as from_utf8_lossy
    }

    // ------------------------------------------------------------------------------------------------ lookups

    /** The id of a token (added tokens first, as tokenizers' token_to_id), or null. */
    public Integer tokenId(String token) {
        for (Added a : added.values()) if (a.content.equals(token)) return a.id;
        return vocab.get(token);
    }

    public boolean isSpecial(int id) {
        Added a = added.get(id);
        return a != null && a.special;
    }

    public int vocabSize() {
        return idToToken.length;
    }

    /** The added tokens, content -> id (what the tests and the docs show). */
    public Map<String, Integer> addedTokens() {
        Map<String, Integer> out = new LinkedHashMap<>();
        for (Added a : added.values()) out.put(a.content, a.id);
        return out;
    }
}
