package org.memlora.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.Test;

/** Op prompts, op-output parsing and the formatting of turns / facts / memories / dates, against Python. */
public class PromptTest {
    @Test
    public void parsingMatchesPython() {
        Map<String, Object> cases = Vectors.obj(Vectors.load("parse.json"));
        int n = 0;
        for (String op : new String[] {"extract", "update"}) {
            for (Object o : Vectors.arr(cases.get(op))) {
                Map<String, Object> c = Vectors.obj(o);
                String text = (String) c.get("text");
                Object got;
                try {
                    if (op.equals("extract")) got = new ArrayList<Object>(OpParser.parseExtract(text));
                    else {
                        List<Object> evs = new ArrayList<>();
                        for (UpdateEvent e : OpParser.parseUpdate(text)) evs.add(e.toMap());
                        got = evs;
                    }
                } catch (ParseError e) { // both refuse; the wording is each reader's own
                    if (!c.containsKey("error")) fail(op + " " + quoted(text) + ": Python parsed it, Java: " + e.getMessage());
                    n++;
                    continue;
                }
                if (c.containsKey("error")) fail(op + " " + quoted(text) + ": Python refused it (" + c.get("error") + "), Java parsed " + got);
                Vectors.assertJsonEquals(op + " " + quoted(text), c.get("value"), got);
                n++;
            }
        }
        assertEquals(true, n > 100);
    }

    static String quoted(String text) {
        return JsonTree.write(java.util.Arrays.asList(text.length() > 200 ? text.substring(0, 200) + "..." : text), 0);
    }

    static List<Turn> turns(Object v) {
        List<Turn> out = new ArrayList<>();
        for (Object o : Vectors.arr(v)) {
            Map<String, Object> t = Vectors.obj(o);
            out.add(new Turn((String) t.get("speaker"), (String) t.getOrDefault("text", ""), (String) t.get("blip_caption"),
                    (String) t.get("dia_id")));
        }
        return out;
    }

    static List<Memory> memories(Object v) {
        List<Memory> out = new ArrayList<>();
        for (Object o : Vectors.arr(v)) {
            Map<String, Object> m = Vectors.obj(o);
            out.add(new Memory((Long) m.get("id"), null, (String) m.get("text"), (String) m.get("created_at"), (String) m.get("updated_at"),
                    new ArrayList<>(), null));
        }
        return out;
    }

    @Test
    public void formattingMatchesPython() {
        Map<String, Object> f = Vectors.obj(Vectors.load("format.json"));
        for (Object o : Vectors.arr(f.get("dates"))) {
            Map<String, Object> d = Vectors.obj(o);
            String v = (String) d.get("value");
            assertEquals("to_iso(" + quoted(v) + ")", d.get("to_iso"), MemoryFormat.toIso(v));
            assertEquals("display_date(" + quoted(v) + ")", d.get("display"), MemoryFormat.displayDate(v));
        }
        assertEquals(f.get("display_none"), MemoryFormat.displayDate(null));
        Map<String, Object> t = Vectors.obj(f.get("turns"));
        assertEquals(t.get("text"), MemoryFormat.formatTurns(turns(t.get("input"))));
        for (Object o : Vectors.arr(f.get("facts"))) {
            Map<String, Object> c = Vectors.obj(o);
            assertEquals(c.get("text"), MemoryFormat.formatFacts(Vectors.strings(c.get("input"))));
        }
        for (Object o : Vectors.arr(f.get("memories"))) {
            Map<String, Object> c = Vectors.obj(o);
            MemoryFormat.Formatted fm = MemoryFormat.formatMemories(memories(c.get("input")), (Boolean) c.get("with_dates"));
            assertEquals(c.get("text"), fm.text);
            Vectors.assertJsonEquals("id_map", c.get("id_map"), fm.idMap);
        }
        Manifest m = Vectors.bundle();
        int n = 0;
        for (Object o : Vectors.arr(f.get("messages"))) {
            Map<String, Object> c = Vectors.obj(o);
            List<ChatMessage> got;
            switch ((String) c.get("op")) {
                case "extract":
                    got = MemoryFormat.extractMessages(turns(c.get("turns")), (String) c.get("date"), m.op("extract").prompt);
                    break;
                case "update": {
                    MemoryFormat.UpdatePrompt p = MemoryFormat.updateMessages(Vectors.strings(c.get("facts")), memories(c.get("memories")),
                            m.op("update").prompt);
                    Vectors.assertJsonEquals("update id_map", c.get("id_map"), p.idMap);
                    got = p.messages;
                    break;
                }
                default:
                    got = MemoryFormat.generateMessages((String) c.get("question"), memories(c.get("memories")), m.op("generate").prompt);
            }
            Vectors.assertJsonEquals(c.get("op") + " messages", c.get("messages"), Vectors.messageMaps(got));
            n++;
        }
        assertEquals(5, n);
    }

    @Test
    public void opPromptsAreSubstitutionOnly() {
        OpPrompt p = new OpPrompt("t.v1", "S", "Q: {question}\nM:\n{memories}", java.util.Arrays.asList("memories", "question"));
        Map<String, String> f = new LinkedHashMap<>();
        f.put("memories", "{question} stays as it is");
        f.put("question", "a {b} c");
        assertEquals("Q: a {b} c\nM:\n{question} stays as it is", p.messages(f).get(1).content);
        f.remove("memories");
        try {
            p.messages(f);
            fail();
        } catch (IllegalArgumentException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("memories"));
        }
        for (String user : new String[] {"{question} {memories} {x}", "{question} {{memories}}", "{question} {memories", "{question}"}) {
            assertNotNull(user, OpPrompt.problem(user, java.util.Arrays.asList("memories", "question")));
        }
    }
}
