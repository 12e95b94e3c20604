package org.memlora.core;

import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.function.Function;

/**
 * The memory cycle of runtimes/memory/pipeline.py {@code MemoryPipeline}, step for step, so the phone does exactly what
 * the Python pipeline does: {@link #addTurns} = one extract call over the turns, then per batch of facts one update
 * call showing the stored memories most similar to those facts (temporary ids), its events applied in one SQLite
 * transaction; {@link #answer} = the top-k memories by cosine similarity and the most similar kept turns (every turn
 * is kept as it was said), shown oldest first with dates, -> generate.
 * Unusable JSON changes nothing; every model call is recorded. Shared images (MemLoRA-V): {@link #shareImage} keeps
 * the pixels in the store; with a {@link #vision} op, a question about a photo whose best shared image matches goes to
 * it (pipeline.answer with images="pixels").
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

    /** The vision op (MemLoRA-V): the answer to a question about an image (PNG bytes), from its pixels. */
    public interface Vision {
        Generation answer(byte[] png, String question, Integer maxNewTokens, TokenListener onText);
    }

    /** A question matching this asks about a shared image (pipeline.VISUAL_WORDS). */
    public static final java.util.regex.Pattern VISUAL_WORDS = java.util.regex.Pattern.compile(
            "\\b(photos?|pictures?|pics?|images?|snapshots?|selfies?|photographs?|drawings?)\\b",
            java.util.regex.Pattern.CASE_INSENSITIVE);

    /** A kept turn is shown to generate cut to this many code points (pipeline.TURN_SHOWN_CHARS). */
    public static final int TURN_SHOWN_CHARS = 500;

    public static final class Config {
        public int updateBatch = 4;
        public int updateTopK = 5;
        public int updateMaxMemories = 10;
        public int answerTopK = 10;
        /** As PipelineConfig.answer_turns: the kept conversation turns most similar to the question shown beside the
         *  memories (0: memories only). */
        public int answerTurns = 5;
        /** As PipelineConfig.turn_ranking: "hybrid" (cosine + BM25 rank fusion) or "cosine". */
        public String turnRanking = "hybrid";
        /** As pipeline.PipelineConfig.add_to_empty_store: nothing stored yet -> every fact is an ADD, no update call. */
        public boolean addToEmptyStore = true;
        /** As PipelineConfig.visual_min_score: a question about a photo goes to the vision op only when the best shared
         *  image's text scores at least this. */
        public double visualMinScore = 0.5;
        /** As PipelineConfig.visual_min_margin: how far the best image must score above the second best. */
        public double visualMinMargin = 0.1;
        public final Map<String, Integer> maxNewTokens = new LinkedHashMap<>();
    }

    /** One model call, as pipeline.OpCall. */
    public static final class OpCall {
        public final String op, text, error, stopReason;
        public final Boolean ok; // JSON parsed (extract/update); null for generate
        public final double ms;
        public final int promptTokens, newTokens;
        final Object value; // what the parser made of the text (null: refused, or generate)

        OpCall(String op, Generation g, Object value, Boolean ok, String error, double ms) {
            this.op = op;
            this.text = g.text;
            this.value = value;
            this.ok = ok;
            this.error = error;
            this.ms = ms;
            this.promptTokens = g.promptTokens;
            this.newTokens = g.newTokens;
            this.stopReason = g.stopReason;
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
        public final MemoryStore.StoredImage image; // the shared image the vision op answered from (null: text)
        public final List<MemoryStore.StoredTurn> turns; // the kept turns shown beside the memories

        Answer(String text, List<MemoryStore.Scored> memories, OpCall call, MemoryStore.StoredImage image,
               List<MemoryStore.StoredTurn> turns) {
            this.text = text;
            this.memories = memories;
            this.call = call;
            this.image = image;
            this.turns = turns;
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
    /** The vision op, when the bundle has one (null: questions about photos are answered from text). */
    public Vision vision;

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

    private OpPrompt template(String op) {
        OpPrompt p = prompts.get(op);
        if (p == null) throw new BundleError("the bundle has no prompt for op '" + op + "' (ops: " + prompts.keySet() + ")");
        return p;
    }

    /** One model call, recorded in {@link #calls}; {@code parse} (null for generate) reads its output. */
    private OpCall call(String op, List<ChatMessage> messages, Function<String, ?> parse, TokenListener onText) {
        long t0 = System.nanoTime();
        Generation g = llm.generate(op, messages, config.maxNewTokens.get(op), onText);
        double ms = Math.round((System.nanoTime() - t0) / 1e5) / 10.0;
        OpCall c;
        try {
            c = new OpCall(op, g, parse == null ? null : parse.apply(g.text), parse == null ? null : true, null, ms);
        } catch (ParseError e) {
            c = new OpCall(op, g, null, false, e.getMessage(), ms);
        }
        calls.add(c);
        return c;
    }

    @SuppressWarnings("unchecked")
    public List<String> extract(List<Turn> turns, String date) {
        Object facts = call("extract", MemoryFormat.extractMessages(turns, date, template("extract")), OpParser::parseExtract, null).value;
        return facts != null ? (List<String>) facts : new ArrayList<>();
    }

    /** Union of the top-k stored memories of each fact, best score first, at most updateMaxMemories. */
    public List<Memory> similar(List<String> facts) {
        if (facts.isEmpty() || store.count(owner) == 0) return new ArrayList<>();
        Map<Long, MemoryStore.Scored> best = new LinkedHashMap<>();
        for (float[] v : embedder.embed(facts)) {
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
            events = (List<UpdateEvent>) call("update", p.messages, OpParser::parseUpdate, null).value;
            if (events == null) return null;
            idMap = p.idMap;
        }
        String batch = String.format("%012x", random.nextLong() & 0xFFFF_FFFF_FFFFL); // 12 random hex digits
        return store.applyUpdate(events, idMap, owner, sourceTurns, embedder, MemoryFormat.toIso(date), batch);
    }

    /** Keeps each turn as it was said ("Speaker: text"), with its embedding, for the answer step (pipeline.keep_turns). */
    public List<Long> keepTurns(List<Turn> turns, String date) {
        if (turns.isEmpty()) return new ArrayList<>();
        List<String> texts = new ArrayList<>(), ids = new ArrayList<>();
        for (Turn t : turns) {
            texts.add(MemoryFormat.formatTurns(Collections.singletonList(t)));
            ids.add(t.diaId != null && !t.diaId.isEmpty() ? t.diaId : null);
        }
        return store.addTurns(texts, embedder.embed(texts), owner, ids, MemoryFormat.toIso(date));
    }

    /** Keep the turns, extract from them, then fold the facts into the store (one update call per batch of facts). */
    public AddTurnsResult addTurns(List<Turn> turns, String date) {
        int calls0 = calls.size();
        keepTurns(turns, date);
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

    /**
     * Keeps a shared image (PNG bytes) in the store with the turn's text, as pipeline.share_image does with
     * images="pixels"; returns the turn as extract should read it ("... [shares a photo]"). Pass it to {@link #addTurns}.
     */
    public Turn shareImage(byte[] png, Turn turn, String date) {
        String context = Text.strip(turn.speaker + ": " + Text.collapse(turn.text == null ? "" : turn.text));
        store.addImage(png, context, embedder.embed(Collections.singletonList(context))[0], owner,
                turn.diaId != null && !turn.diaId.isEmpty() ? turn.diaId : null, MemoryFormat.toIso(date));
        return new Turn(turn.speaker, turn.text, turn.blipCaption, turn.diaId, true);
    }

    public List<MemoryStore.Scored> retrieve(String question, Integer k) {
        return store.search(embedder.embed(Collections.singletonList(question))[0], (k == null || k == 0) ? config.answerTopK : k, owner);
    }

    /** Retrieve -> generate; {@code onText} receives the answer as it streams. */
    public Answer answer(String question, Integer k, TokenListener onText) {
        if (vision != null && VISUAL_WORDS.matcher(question).find() && store.imageCount(owner) > 0) {
            List<MemoryStore.StoredImage> best = store.searchImages(embedder.embed(Collections.singletonList(question))[0], 2, owner);
            // A row that is not a PNG (a store written by something else) is answered from text, as in Python.
            if (!best.isEmpty() && best.get(0).score >= config.visualMinScore
                    && (best.size() == 1 || best.get(0).score - best.get(1).score >= config.visualMinMargin)
                    && MemoryStore.isPng(best.get(0).png)) {
                long t0 = System.nanoTime();
                Generation g = vision.answer(best.get(0).png, question, config.maxNewTokens.get("vqa"), onText);
                OpCall c = new OpCall("vqa", g, null, null, null, Math.round((System.nanoTime() - t0) / 1e5) / 10.0);
                calls.add(c);
                return new Answer(cleanAnswer(c.text), new ArrayList<>(), c, best.get(0), new ArrayList<>());
            }
        }
        float[] q = embedder.embed(Collections.singletonList(question))[0];
        List<MemoryStore.Scored> hits = store.search(q, (k == null || k == 0) ? config.answerTopK : k, owner);
        List<MemoryStore.StoredTurn> turns = config.answerTurns > 0
                ? store.searchTurns(q, config.answerTurns, owner, "hybrid".equals(config.turnRanking) ? question : null)
                : new ArrayList<>();
        // Memories and turns together, oldest first (a memory before a turn of the same date), each with its date.
        List<Object[]> mixed = new ArrayList<>(); // {date, kind, id, memory}
        for (MemoryStore.Scored s : hits) mixed.add(new Object[] {s.memory.updatedAt, 0, s.memory.id, s.memory});
        for (MemoryStore.StoredTurn t : turns) {
            mixed.add(new Object[] {t.saidAt, 1, t.id,
                    new Memory(t.id, t.owner, cut(t.text, TURN_SHOWN_CHARS), t.saidAt, t.saidAt, Collections.<String>emptyList(), null)});
        }
        mixed.sort((a, b) -> {
            int c = Text.CODE_POINT_ORDER.compare((String) a[0], (String) b[0]);
            if (c == 0) c = Integer.compare((Integer) a[1], (Integer) b[1]);
            return c != 0 ? c : Long.compare((Long) a[2], (Long) b[2]);
        });
        List<Memory> shown = new ArrayList<>();
        for (Object[] x : mixed) shown.add((Memory) x[3]);
        OpCall c = call("generate", MemoryFormat.generateMessages(question, shown, template("generate")), null, onText);
        return new Answer(cleanAnswer(c.text), hits, c, null, turns);
    }

    /** The first {@code n} code points of {@code s} (Python's {@code s[:n]}). */
    static String cut(String s, int n) {
        return s.codePointCount(0, s.length()) <= n ? s : s.substring(0, s.offsetByCodePoints(0, n));
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
