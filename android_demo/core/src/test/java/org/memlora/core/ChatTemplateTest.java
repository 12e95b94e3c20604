package org.memlora.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/** Chat templates rendered by jinja2 (runtimes/base.py) and by ChatTemplate must give the same text. */
public class ChatTemplateTest {
    @Test
    public void rendersLikeJinja2() {
        int n = 0, errors = 0;
        for (Object o : Vectors.arr(Vectors.load("chat.json"))) {
            Map<String, Object> c = Vectors.obj(o);
            String what = c.get("template_name") + " #" + n;
            List<ChatMessage> msgs = Vectors.messages(c.get("messages"));
            try {
                String got = ChatTemplate.apply((String) c.get("template"), msgs, (String) c.get("bos_token"), (String) c.get("eos_token"));
                if (c.containsKey("error")) fail(what + ": jinja2 raised " + c.get("error") + ", Java rendered " + Py.repr(got));
                assertEquals(what, c.get("text"), got);
            } catch (ChatTemplate.TemplateError e) {
                if (!c.containsKey("error")) throw new AssertionError(what + ": jinja2 rendered it, Java: " + e.getMessage(), e);
                Map<String, Object> err = Vectors.obj(c.get("error"));
                if (err.get("type").equals("ValueError")) assertEquals(what, err.get("message"), e.getMessage()); // raise_exception
                errors++;
            }
            n++;
        }
        assertTrue("cases " + n, n >= 60);
        assertTrue("error cases " + errors, errors >= 1);
    }

    @Test
    public void unsupportedSyntaxFailsLoudly() {
        for (String t : Arrays.asList("{% macro m() %}x{% endmacro %}", "{{ x | nofilter }}", "{% if x %}", "{{ 'a' ", "{% raw %}{% endraw %}")) {
            try {
                ChatTemplate.compile(t).render(Arrays.asList(new ChatMessage("user", "hi")), true, "", "");
                fail("accepted " + t);
            } catch (ChatTemplate.TemplateError e) {
                assertTrue(e.getMessage(), !e.getMessage().isEmpty());
            }
        }
    }

    @Test
    public void jinjaSemanticsTheTemplatesRelyOn() {
        List<ChatMessage> m = Arrays.asList(new ChatMessage("user", "hi"));
        assertEquals("1110", ChatTemplate.compile("{% set x = 0 %}{% for i in range(3) %}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}").render(m, true, "", ""));
        assertEquals("0.5 3 1 1024 True -2 2", ChatTemplate.compile("{{ 1 / 2 }} {{ 7 // 2 }} {{ 7 % 3 }} {{ 2 ** 10 }} {{ 1 == 1.0 }} {{ -3 // 2 }} {{ -7 % 3 }}").render(m, true, "", ""));
        assertEquals("[2, 3] olleh a|(1, 2)", ChatTemplate.compile("{{ [1,2,3][1:] }} {{ 'hello'[::-1] }} {{ 'abc'[0] }}|{{ (1,2) }}").render(m, true, "", ""));
        assertEquals("a1None", ChatTemplate.compile("{{ 'a' ~ 1 ~ none ~ undefinedvar }}").render(m, true, "", ""));
    }
}
