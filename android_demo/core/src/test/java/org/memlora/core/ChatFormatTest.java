package org.memlora.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/**
 * Prompts are the bundle's chat format, concatenated (chat.json): the same text as runtimes/base.py builds, the same
 * token ids, and the same text as the model's own Jinja chat template gave before prompts became bundle data.
 */
public class ChatFormatTest {
    static ChatFormat format(Object v) {
        Map<String, Object> f = Vectors.obj(v);
        Map<String, String[]> roles = new LinkedHashMap<>();
        for (Map.Entry<String, Object> r : Vectors.obj(f.get("roles")).entrySet()) {
            Map<String, Object> ba = Vectors.obj(r.getValue());
            roles.put(r.getKey(), new String[] {(String) ba.get("before"), (String) ba.get("after")});
        }
        return new ChatFormat(roles, (String) f.get("generation_prompt"), (String) f.get("default_system"), (Boolean) f.get("add_special_tokens"));
    }

    @Test
    public void promptsAndTokenIdsMatchPython() {
        Manifest m = Vectors.bundle();
        BpeTokenizer tok = BpeTokenizer.load(m.tokenizerFile());
        int n = 0, ids = 0, template = 0;
        for (Object o : Vectors.arr(Vectors.load("chat.json"))) {
            Map<String, Object> c = Vectors.obj(o);
            String what = c.get("format_name") + " #" + n++;
            List<ChatMessage> msgs = Vectors.messages(c.get("messages"));
            assertEquals(what, c.get("text"), format(c.get("chat_format")).render(msgs));
            if (!"bundle".equals(c.get("format_name"))) continue;
            String prompt = m.renderPrompt(msgs);
            assertEquals(what, c.get("text"), prompt);
            assertEquals(what, false, m.chatFormat().addSpecialTokens); // the BPE tokenizer encodes without special tokens
            assertArrayEquals(what, BpeTokenizerTest.ints(c.get("ids")), tok.encode(prompt));
            ids++;
            if (c.containsKey("template_text")) {
                assertEquals(what + ": the model's chat template", c.get("template_text"), prompt);
                template++;
            }
        }
        assertTrue("cases " + n, n >= 20);
        assertTrue("token id cases " + ids, ids >= 10);
        assertTrue("chat template cases " + template, template >= 10);
    }

    @Test
    public void framingRules() {
        Map<String, String[]> roles = new LinkedHashMap<>();
        roles.put("system", new String[] {"<s>", "</s>"});
        roles.put("user", new String[] {"<u>", "</u>"});
        ChatFormat f = new ChatFormat(roles, "<a>", "default", false);
        assertEquals("<s>default</s><u>hi</u><a>", f.render(Arrays.asList(new ChatMessage("user", "hi"))));
        assertEquals("<s>S</s><u>{x}</u><a>", f.render(Arrays.asList(new ChatMessage("system", "S"), new ChatMessage("user", "{x}"))));
        assertEquals("<s>default</s><a>", f.render(Arrays.<ChatMessage>asList()));
        try {
            f.render(Arrays.asList(new ChatMessage("tool", "x")));
            fail("framed a role the format does not have");
        } catch (BundleError e) {
            assertTrue(e.getMessage(), e.getMessage().contains("'tool'"));
        }
    }
}
