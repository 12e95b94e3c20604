package org.memlora.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/** The LM tokenizer of the ONNX backend gives Hugging Face tokenizers' ids and decoded text (bpe.json). */
public class BpeTokenizerTest {
    static int[] ints(Object v) {
        List<Object> l = Vectors.arr(v);
        int[] out = new int[l.size()];
        for (int i = 0; i < out.length; i++) out[i] = ((Number) l.get(i)).intValue();
        return out;
    }

    static BpeTokenizer load(Map<String, Object> variant) {
        return BpeTokenizer.load(new File(Vectors.dir(), (String) variant.get("file")));
    }

    @Test
    public void encodeMatchesHuggingFaceTokenizers() {
        int n = 0;
        for (Object o : Vectors.arr(Vectors.obj(Vectors.load("bpe.json")).get("variants"))) {
            Map<String, Object> v = Vectors.obj(o);
            BpeTokenizer tok = load(v);
            for (Object c : Vectors.arr(v.get("encode"))) {
                Map<String, Object> cs = Vectors.obj(c);
                String text = (String) cs.get("text");
                assertArrayEquals(v.get("name") + ": " + PromptTest.quoted(text), ints(cs.get("ids")), tok.encode(text));
                n++;
            }
        }
        assertTrue("encode cases: " + n, n > 80);
    }

    @Test
    public void decodeMatchesHuggingFaceTokenizers() {
        int n = 0;
        for (Object o : Vectors.arr(Vectors.obj(Vectors.load("bpe.json")).get("variants"))) {
            Map<String, Object> v = Vectors.obj(o);
            BpeTokenizer tok = load(v);
            for (Object c : Vectors.arr(v.get("decode"))) {
                Map<String, Object> cs = Vectors.obj(c);
                boolean skip = (Boolean) cs.get("skip_special_tokens");
                assertEquals(v.get("name") + ": decode " + cs.get("ids") + " skip=" + skip, cs.get("text"), tok.decode(ints(cs.get("ids")), skip));
                n++;
            }
            // The added tokens (content -> id) are tokenizers' get_added_tokens_decoder().
            Map<String, Integer> added = new LinkedHashMap<>();
            for (Map.Entry<String, Object> e : Vectors.obj(v.get("added")).entrySet()) added.put(e.getKey(), ((Number) e.getValue()).intValue());
            assertEquals(v.get("name") + ": added tokens", added, tok.addedTokens());
        }
        assertTrue("decode cases: " + n, n > 200);
    }

    @Test
    public void specialTokensAndLookups() {
        Map<String, Object> v = Vectors.obj(Vectors.arr(Vectors.obj(Vectors.load("bpe.json")).get("variants")).get(0));
        BpeTokenizer tok = load(v);
        Integer end = tok.tokenId("<|im_end|>");
        assertEquals(Integer.valueOf(2), end);
        assertTrue(tok.isSpecial(end));
        assertTrue(!tok.isSpecial(tok.encode("Hello")[0]));
        assertEquals("", tok.decode(new int[] {end}, true));
        assertEquals("<|im_end|>", tok.decode(new int[] {end}, false));
    }

    @Test
    public void unsupportedTokenizersAreRefusedByName() {
        Map<String, Object> wp = Vectors.obj(Vectors.obj(Vectors.load("wordpiece.json")).get("tokenizer"));
        try {
            BpeTokenizer.fromJson(wp);
            fail("a WordPiece tokenizer was accepted");
        } catch (IllegalArgumentException e) {
            assertEquals("tokenizer model 'WordPiece' is not supported (byte-level BPE only)", e.getMessage());
        }
    }
}
