package org.memlora.core;

import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * The memory cycle of runtimes/memory/pipeline.py {@code MemoryPipeline}, step for step, so the phone does exactly what
 * the Python pipeline does: {@link #addTurns} = one extract call over the turns, then per batch of facts one update
 * call showing the stored memories most similar to those facts (temporary ids), its events applied in one SQLite
 * transaction; {@link #answer} = the top-k memories by cosine similarity, shown oldest first with dates, -> generate.
 * Unusable JSON changes nothing; every model call is recorded.
 */
public final class MemoryCycle {

    /** What a model call returned. */
    public static final class Generation {
        public final String text;
        public final int promptTokens;
        public final int newTokens;
        public final String stopReason;

        public Generation(String text, int promptTokens, int newTokens, String stopReason) {
            this.text = text;
            this.promptTokens = promptTokens;
            this.newTokens = newTokens;
            this.stopReason = stopReason;
        }
    }

    /** Receives decoded text pieces as they stream. */
    public interface TokenListener {
        void onText(String piece);
    }

    /** The language model: an op's answer to chat messages (maxNewTokens null: the bundle's default). */
    public interface Llm {
        Generation generate(String op, List<ChatMessage> messages, Integer maxNewTokens, TokenListener onText);
    }

    /** Sentence embedder: one vector per text. */
    public interface Embedder extends MemoryStore.EmbedFn {}

    public static final class Config {
        public int updateBatch = 4;
        public int updateTopK = 5;
        public int updateMaxMemories = 10;
        public int answerTopK = 10;
        /** As pipeline.PipelineConfig.add_to_empty_store: nothing stored yet -> every fact is an ADD, no update call. */
        public boolean addToEmptyStore = true;
        public final Map<String, Integer> maxNewTokens = new LinkedHashMap<>();
    }

    /** One model call, as pipeline.OpCall. */
    public static final class OpCall {
        public final String op, text, error, stopReason;
        public final Boolean ok; // JSON parsed (extract/update); null for generate
        public final double ms;
        public final int promptTokens, newTokens;

        OpCall(String op, String text, Boolean ok, String error, double ms, int promptTokens, int newTokens, String stopReason) {
            this.op = op;
            this.text = text;
            this.ok = ok;
            this.error = error;
            this.ms = ms;
            this.promptTokens = promptTokens;
            this.newTokens = newTokens;
            this.stopReason = stopReason;
        }
    }

    public static final class AddTurnsResult {
        public final List<String> facts;
        public final List<ApplyResult> applied;
        public final List<OpCall> calls;

        AddTurnsResult(List<String> facts, List<ApplyResult> applied, List<OpCall> calls) {
            this.facts = facts;
            this.applied = applied;
            this.calls = calls;
        }
    }

    public static final class Answer {
        public final String text;
        public final List<MemoryStore.Scored> memories;
        public final OpCall call;

        Answer(String text, List<MemoryStore.Scored> memories, OpCall call) {
            this.text = text;
            this.memories = memories;
            this.call = call;
        }
    }

    private final Llm llm;
    private final Embedder embedder;
    private final MemoryStore store;
    private final String owner;
    private final Map<String, OpPrompt> prompts;
    public final Config config;
    public final List<OpCall> calls = Collections.synchronizedList(new ArrayList<>());
    private final SecureRandom random = new SecureRandom();

    /** {@code prompts}: op -> the bundle's prompt ({@link #templatesOf}). */
    public MemoryCycle(Llm llm, Embedder embedder, MemoryStore store, String owner, Config config, Map<String, OpPrompt> prompts) {
        this.llm = llm;
        this.embedder = embedder;
        this.store = store;
        this.owner = owner;
        this.config = config != null ? config : new Config();
        this.prompts = new LinkedHashMap<>(prompts);
    }

    /** Op -> the prompt the bundle carries for it (manifest ops.*.prompt). */
    public static Map<String, OpPrompt> templatesOf(Manifest m) {
        Map<String, OpPrompt> t = new LinkedHashMap<>();
        for (Manifest.OpEntry e : m.ops.values()) t.put(e.name, e.prompt);
        return t;
    }

    public OpPrompt template(String op) {
        OpPrompt p = prompts.get(op);
        if (p == null) throw new BundleError("the bundle has no prompt for op '" + op + "' (ops: " + prompts.keySet() + ")");
        return p;
    }

    public float[][] embed(List<String> texts) {
        return embedder.embed(texts);
    }

    private interface Parser<T> {
        T parse(String text);
    }

    private <T> Object[] call(String op, List<ChatMessage> messages, Parser<T> parse, TokenListener onText) {
        long t0 = System.nanoTime();
        Generation g = llm.generate(op, messages, config.maxNewTokens.get(op), onText);
        double ms = Math.round((System.nanoTime() - t0) / 1e5) / 10.0;
        T value = null;
        Boolean ok = null;
        String err = null;
        if (parse != null) {
            try {
                value = parse.parse(g.text);
                ok = true;
            } catch (ParseError e) {
                ok = false;
                err = e.getMessage();
            }
        }
        OpCall c = new OpCall(op, g.text, ok, err, ms, g.promptTokens, g.newTokens, g.stopReason);
        calls.add(c);
        return new Object[] {value, c};
    }

    @SuppressWarnings("unchecked")
    public List<String> extract(List<Turn> turns, String date) {
        Object[] r = call("extract", MemoryFormat.extractMessages(turns, date, template("extract")), OpParser::parseExtract, null);
        return r[0] != null ? (List<String>) r[0] : new ArrayList<>();
    }

    /** Union of the top-k stored memories of each fact, best score first, at most updateMaxMemories. */
    public List<Memory> similar(List<String> facts) {
        if (facts.isEmpty() || store.count(owner) == 0) return new ArrayList<>();
        Map<Long, MemoryStore.Scored> best = new LinkedHashMap<>();
        for (float[] v : embed(facts)) {
            for (MemoryStore.Scored s : store.search(v, config.updateTopK, owner)) {
                MemoryStore.Scored b = best.get(s.memory.id);
                if (b == null || s.score > b.score) best.put(s.memory.id, s);
            }
        }
        List<MemoryStore.Scored> ranked = new ArrayList<>(best.values());
        ranked.sort(Comparator.comparingDouble((MemoryStore.Scored s) -> -s.score));
        List<Memory> out = new ArrayList<>();
        for (MemoryStore.Scored s : ranked.subList(0, Math.min(config.updateMaxMemories, ranked.size()))) out.add(s.memory);
        return out;
    }

    @SuppressWarnings("unchecked")
    public ApplyResult update(List<String> facts, String date, List<String> sourceTurns) {
        List<Memory> memories = similar(facts);
        List<UpdateEvent> events;
        Map<String, Long> idMap;
        if (memories.isEmpty() && config.addToEmptyStore) {
            events = new ArrayList<>();
            for (int i = 0; i < facts.size(); i++) events.add(new UpdateEvent(String.valueOf(i), facts.get(i), "ADD", null));
            idMap = new LinkedHashMap<>(); // ADD ignores ids; nothing was shown
        } else {
            MemoryFormat.UpdatePrompt p = MemoryFormat.updateMessages(facts, memories, template("update"));
            Object[] r = call("update", p.messages, OpParser::parseUpdate, null);
            if (r[0] == null) return null;
            events = (List<UpdateEvent>) r[0];
            idMap = p.idMap;
        }
        return store.applyUpdate(events, idMap, owner, sourceTurns, this::embed, MemoryFormat.toIso(date), batchId());
    }

    private String batchId() {
        byte[] b = new byte[6];
        random.nextBytes(b);
        StringBuilder sb = new StringBuilder();
        for (byte x : b) sb.append(String.format("%02x", x));
        return sb.toString();
    }

    /** Extract from the turns, then fold the facts into the store (one update call per batch of facts). */
    public AddTurnsResult addTurns(List<Turn> turns, String date) {
        int calls0 = calls.size();
        List<String> facts = extract(turns, date);
        List<String> ids = new ArrayList<>();
        for (Turn t : turns) if (t.diaId != null && !t.diaId.isEmpty()) ids.add(t.diaId);
        List<ApplyResult> applied = new ArrayList<>();
        int n = Math.max(1, config.updateBatch);
        for (int i = 0; i < facts.size(); i += n) {
            ApplyResult res = update(facts.subList(i, Math.min(facts.size(), i + n)), date, ids);
            if (res != null) applied.add(res);
        }
        return new AddTurnsResult(facts, applied, new ArrayList<>(calls.subList(calls0, calls.size())));
    }

    public List<MemoryStore.Scored> retrieve(String question, Integer k) {
        List<String> q = new ArrayList<>();
        q.add(question);
        return store.search(embed(q)[0], (k == null || k == 0) ? config.answerTopK : k, owner);
    }

    /** Retrieve -> generate; {@code onText} receives the answer as it streams. */
    public Answer answer(String question, Integer k, TokenListener onText) {
        List<MemoryStore.Scored> hits = retrieve(question, k);
        List<Memory> shown = new ArrayList<>();
        for (MemoryStore.Scored s : hits) shown.add(s.memory);
        shown.sort((a, b) -> {
            int c = Text.CODE_POINT_ORDER.compare(a.updatedAt, b.updatedAt);
            return c != 0 ? c : Long.compare(a.id, b.id);
        });
        Object[] r = call("generate", MemoryFormat.generateMessages(question, shown, template("generate")), null, onText);
        OpCall c = (OpCall) r[1];
        return new Answer(cleanAnswer(c.text), hits, c);
    }

    /** The first non-empty line, without surrounding quotes or an "Answer:" prefix (pipeline.clean_answer). */
    public static String cleanAnswer(String text) {
        String line = "";
        for (String ln : Text.lines(Text.strip(text))) {
            if (!Text.strip(ln).isEmpty()) {
                line = Text.strip(ln);
                break;
            }
        }
        if (line.toLowerCase(Locale.ROOT).startsWith("answer:")) line = Text.strip(line.substring(7));
        int a = 0, b = line.length();
        while (a < b && "\"' ".indexOf(line.charAt(a)) >= 0) a++;
        while (b > a && "\"' ".indexOf(line.charAt(b - 1)) >= 0) b--;
        return line.substring(a, b);
    }
}
