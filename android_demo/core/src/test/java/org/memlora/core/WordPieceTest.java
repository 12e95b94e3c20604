package org.memlora.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertTrue;

import java.util.List;
import java.util.Map;
import org.junit.Test;

/** The embedder tokenizer gives Hugging Face tokenizers' ids. */
public class WordPieceTest {
    @Test
    public void idsMatchHuggingFaceTokenizers() {
        Map<String, Object> v = Vectors.obj(Vectors.load("wordpiece.json"));
        WordPiece wp = WordPiece.fromJson(Vectors.obj(v.get("tokenizer")), ((Long) v.get("max_len")).intValue());
        int n = 0;
        for (Object o : Vectors.arr(v.get("cases"))) {
            Map<String, Object> c = Vectors.obj(o);
            List<Object> ids = Vectors.arr(c.get("ids"));
            long[] want = new long[ids.size()];
            for (int i = 0; i < want.length; i++) want[i] = (Long) ids.get(i);
            assertArrayEquals(PromptTest.quoted((String) c.get("text")) + " -> " + c.get("tokens"), want, wp.encode((String) c.get("text")));
            n++;
        }
        assertTrue(n > 10);
    }
}
