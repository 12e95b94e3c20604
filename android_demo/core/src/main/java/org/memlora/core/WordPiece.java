package org.memlora.core;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.text.Normalizer;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The retrieval embedder's tokenizer on the phone: a BERT WordPiece {@code tokenizer.json} (BertNormalizer,
 * BertPreTokenizer, WordPiece, [CLS] ... [SEP] template, right truncation) applied as Hugging Face tokenizers applies
 * it — the bundle's {@code embedder_tokenizer.json} is what runtimes/memory/embed.py tokenizes with. The JVM tests hold
 * it to the ids of the Python tokenizer on varied text (accents, CJK, emoji, control characters, long input).
 */
public final class WordPiece {
    private final Map<String, Integer> vocab = new HashMap<>();
    private final String unk;
    private final String prefix;
    private final int maxCharsPerWord;
    private final boolean cleanText, chineseChars, stripAccents, lowercase;
    private final List<Integer> before = new ArrayList<>(), after = new ArrayList<>();
    private final int maxLength;

    @SuppressWarnings("unchecked")
    private WordPiece(Map<String, Object> tok, int maxLen) {
        Map<String, Object> model = JsonTree.obj(tok.get("model"), "model");
        if (!"WordPiece".equals(model.get("type"))) throw new IllegalArgumentException("not a WordPiece tokenizer: " + model.get("type"));
        for (Map.Entry<String, Object> e : JsonTree.obj(model.get("vocab"), "vocab").entrySet()) vocab.put(e.getKey(), ((Number) e.getValue()).intValue());
        unk = (String) model.getOrDefault("unk_token", "[UNK]");
        prefix = (String) model.getOrDefault("continuing_subword_prefix", "##");
        maxCharsPerWord = ((Number) model.getOrDefault("max_input_chars_per_word", 100L)).intValue();
        Map<String, Object> norm = tok.get("normalizer") instanceof Map ? (Map<String, Object>) tok.get("normalizer") : new HashMap<>();
        if (!norm.isEmpty() && !"BertNormalizer".equals(norm.get("type")))
            throw new IllegalArgumentException("normalizer " + norm.get("type") + " is not supported (BertNormalizer only)");
        cleanText = !Boolean.FALSE.equals(norm.get("clean_text")) && !norm.isEmpty();
        chineseChars = !Boolean.FALSE.equals(norm.get("handle_chinese_chars")) && !norm.isEmpty();
        lowercase = !Boolean.FALSE.equals(norm.get("lowercase")) && !norm.isEmpty();
        stripAccents = norm.get("strip_accents") instanceof Boolean ? (Boolean) norm.get("strip_accents") : lowercase;
        Object pre = tok.get("pre_tokenizer");
        if (pre instanceof Map && !"BertPreTokenizer".equals(((Map<String, Object>) pre).get("type")))
            throw new IllegalArgumentException("pre-tokenizer " + ((Map<String, Object>) pre).get("type") + " is not supported");
        Object post = tok.get("post_processor");
        if (post instanceof Map) {
            Map<String, Object> pp = (Map<String, Object>) post;
            if ("TemplateProcessing".equals(pp.get("type"))) {
                Map<String, Object> specials = JsonTree.obj(pp.get("special_tokens"), "special_tokens");
                boolean seenA = false;
                for (Object piece : JsonTree.arr(pp.get("single"), "single")) {
                    Map<String, Object> pc = JsonTree.obj(piece, "piece");
                    if (pc.containsKey("Sequence")) seenA = true;
                    else {
                        String id = (String) JsonTree.obj(pc.get("SpecialToken"), "SpecialToken").get("id");
                        for (Object n : JsonTree.arr(JsonTree.obj(specials.get(id), "special").get("ids"), "ids"))
                            (seenA ? after : before).add(((Number) n).intValue());
                    }
                }
            } else if ("BertProcessing".equals(pp.get("type"))) {
                before.add(((Number) JsonTree.arr(pp.get("cls"), "cls").get(1)).intValue());
                after.add(((Number) JsonTree.arr(pp.get("sep"), "sep").get(1)).intValue());
            } else throw new IllegalArgumentException("post-processor " + pp.get("type") + " is not supported");
        }
        int ml = maxLen;
        if (ml <= 0 && tok.get("truncation") instanceof Map) ml = ((Number) ((Map<String, Object>) tok.get("truncation")).get("max_length")).intValue();
        maxLength = ml;
    }

    /** From a tokenizer.json; {@code maxLen} > 0 overrides the file's truncation length (the manifest's max_len). */
    public static WordPiece load(File tokenizerJson, int maxLen) {
        try {
            String text = new String(Files.readAllBytes(tokenizerJson.toPath()), StandardCharsets.UTF_8);
            return new WordPiece(JsonTree.obj(JsonTree.parse(text), "tokenizer"), maxLen);
        } catch (IOException e) {
            throw new BundleError("cannot read " + tokenizerJson + ": " + e.getMessage());
        }
    }

    public static WordPiece fromJson(Map<String, Object> tokenizer, int maxLen) {
        return new WordPiece(tokenizer, maxLen);
    }

    // ------------------------------------------------------------------------------------------------ char classes

    /** Control in BertNormalizer's sense: general category C* except \t \n \r. */
    static boolean isControl(int c) {
        if (c == '\t' || c == '\n' || c == '\r') return false;
        switch (Character.getType(c)) {
            case Character.CONTROL: case Character.FORMAT: case Character.SURROGATE: case Character.PRIVATE_USE:
            case Character.UNASSIGNED:
                return true;
            default:
                return false;
        }
    }

    static boolean isPunctuation(int c) {
        if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126)) return true;
        switch (Character.getType(c)) {
            case Character.CONNECTOR_PUNCTUATION: case Character.DASH_PUNCTUATION: case Character.START_PUNCTUATION:
            case Character.END_PUNCTUATION: case Character.INITIAL_QUOTE_PUNCTUATION: case Character.FINAL_QUOTE_PUNCTUATION:
            case Character.OTHER_PUNCTUATION:
                return true;
            default:
                return false;
        }
    }

    static boolean isChinese(int c) {
        return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF)
                || (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF)
                || (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
    }

    // ------------------------------------------------------------------------------------------------ pipeline

    String normalize(String text) {
        StringBuilder sb = new StringBuilder();
        text.codePoints().forEach(c -> {
            if (cleanText) {
                if (c == 0 || c == 0xfffd || isControl(c)) return;
                if (Text.isWhiteSpace(c)) c = ' ';
            }
            if (chineseChars && isChinese(c)) sb.append(' ').appendCodePoint(c).append(' ');
            else sb.appendCodePoint(c);
        });
        String s = sb.toString();
        if (stripAccents) {
            StringBuilder out = new StringBuilder();
            Normalizer.normalize(s, Normalizer.Form.NFD).codePoints().forEach(c -> {
                if (Character.getType(c) != Character.NON_SPACING_MARK) out.appendCodePoint(c);
            });
            s = out.toString();
        }
        if (lowercase) {
            StringBuilder out = new StringBuilder();
            s.codePoints().forEach(c -> out.append(new String(Character.toChars(c)).toLowerCase(java.util.Locale.ROOT)));
            s = out.toString();
        }
        return s;
    }

    List<String> preTokenize(String s) {
        List<String> words = new ArrayList<>();
        StringBuilder cur = new StringBuilder();
        s.codePoints().forEach(c -> {
            if (Text.isWhiteSpace(c)) {
                if (cur.length() > 0) words.add(cur.toString());
                cur.setLength(0);
            } else if (isPunctuation(c)) {
                if (cur.length() > 0) words.add(cur.toString());
                cur.setLength(0);
                words.add(new String(Character.toChars(c)));
            } else cur.appendCodePoint(c);
        });
        if (cur.length() > 0) words.add(cur.toString());
        return words;
    }

    void wordPiece(String word, List<Integer> out) {
        int[] cps = word.codePoints().toArray();
        if (cps.length > maxCharsPerWord) {
            out.add(vocab.get(unk));
            return;
        }
        List<Integer> pieces = new ArrayList<>();
        int start = 0;
        while (start < cps.length) {
            int end = cps.length;
            Integer cur = null;
            while (start < end) {
                String sub = new String(cps, start, end - start);
                if (start > 0) sub = prefix + sub;
                Integer id = vocab.get(sub);
                if (id != null) {
                    cur = id;
                    break;
                }
                end--;
            }
            if (cur == null) {
                out.add(vocab.get(unk));
                return;
            }
            pieces.add(cur);
            start = end;
        }
        out.addAll(pieces);
    }

    /** Token ids with the template's special tokens, truncated to the max length (specials included). */
    public long[] encode(String text) {
        List<Integer> ids = new ArrayList<>();
        for (String w : preTokenize(normalize(text))) wordPiece(w, ids);
        if (maxLength > 0) {
            int room = Math.max(0, maxLength - before.size() - after.size());
            if (ids.size() > room) ids = new ArrayList<>(ids.subList(0, room));
        }
        List<Integer> all = new ArrayList<>(before);
        all.addAll(ids);
        all.addAll(after);
        return all.stream().mapToLong(Integer::longValue).toArray();
    }
}
