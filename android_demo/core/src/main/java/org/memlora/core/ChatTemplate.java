package org.memlora.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * Renders a Hugging Face chat template (the Jinja text the bundle manifest carries in {@code tokenizer.chat_template})
 * exactly as runtimes/base.py does with jinja2's {@code ImmutableSandboxedEnvironment(trim_blocks=True,
 * lstrip_blocks=True)} and the variables {@code messages, add_generation_prompt, bos_token, eos_token} plus the
 * global {@code raise_exception}.
 *
 * <p>There is no Jinja for the JVM among the packages this project can use, so this is the subset chat templates use
 * (as Hugging Face's own @huggingface/jinja and swift-jinja are): text with {@code {{ }}}, {@code {% %}},
 * {@code {# #}} and their {@code -}/{@code +} whitespace control; {@code if/elif/else}, {@code for ... in ... [if]}
 * with {@code loop.*} and {@code else}, {@code set} (also {@code ns.attr} of a {@code namespace()} and block
 * {@code set ... endset}); Python-like expressions (literals, lists, tuples, dicts, attribute / item / slice access,
 * arithmetic, {@code ~}, comparisons, {@code in}, {@code and/or/not}, conditional expressions), the common filters,
 * tests and string / dict methods. Anything else fails with a {@link TemplateError} naming it, never silently. The JVM
 * tests render real chat templates through jinja2 and through this class and require identical text.
 */
public final class ChatTemplate {

    /** The template cannot be parsed or rendered (unsupported construct, undefined value, raise_exception). */
    public static final class TemplateError extends RuntimeException {
        public TemplateError(String msg) {
            super(msg);
        }
    }

    private final List<Node> body;

    private ChatTemplate(List<Node> body) {
        this.body = body;
    }

    /** Parses a template; throws TemplateError for syntax this renderer does not support. */
    public static ChatTemplate compile(String source) {
        List<Seg> segs = new Lexer(source).run();
        Parser p = new Parser(segs);
        List<Node> body = p.parseBody();
        if (p.pos < segs.size()) throw new TemplateError("unexpected {% " + segs.get(p.pos).text.trim() + " %}");
        return new ChatTemplate(body);
    }

    /** Renders with the variables runtimes/base.py passes. */
    public String render(List<ChatMessage> messages, boolean addGenerationPrompt, String bosToken, String eosToken) {
        Map<String, Object> vars = new HashMap<>();
        List<Object> msgs = new ArrayList<>();
        for (ChatMessage m : messages) msgs.add(m.toMap());
        vars.put("messages", msgs);
        vars.put("add_generation_prompt", addGenerationPrompt);
        vars.put("bos_token", bosToken == null ? "" : bosToken);
        vars.put("eos_token", eosToken == null ? "" : eosToken);
        return render(vars);
    }

    public String render(Map<String, Object> vars) {
        Scope globals = new Scope(null);
        globals.vars.put("raise_exception", (Fn) (a, kw) -> {
            throw new TemplateError(a.isEmpty() ? "" : Py.str(a.get(0)));
        });
        globals.vars.put("range", (Fn) (a, kw) -> range(a));
        globals.vars.put("namespace", (Fn) (a, kw) -> {
            Namespace ns = new Namespace();
            for (Object o : a) if (o instanceof Map) for (Map.Entry<?, ?> e : ((Map<?, ?>) o).entrySet()) ns.attrs.put(String.valueOf(e.getKey()), e.getValue());
            ns.attrs.putAll(kw);
            return ns;
        });
        globals.vars.put("dict", (Fn) (a, kw) -> new LinkedHashMap<String, Object>(kw));
        Scope scope = new Scope(globals);
        scope.vars.putAll(vars);
        StringBuilder out = new StringBuilder();
        exec(body, scope, out);
        return out.toString();
    }

    /**
     * The prompt text for a manifest, as runtimes/base.py {@code Runtime.apply_chat_template}: the chat template with
     * add_generation_prompt, or without a template the message contents joined by newlines plus a final newline.
     */
    public static String apply(String template, List<ChatMessage> messages, String bosToken, String eosToken) {
        if (template == null || template.isEmpty()) {
            List<String> parts = new ArrayList<>();
            for (ChatMessage m : messages) parts.add(m.content);
            return String.join("\n", parts) + "\n";
        }
        return compile(template).render(messages, true, bosToken, eosToken);
    }

    // ================================================================================================ lexing

    /** A piece of the template after whitespace control: text, an output tag or a statement tag. */
    private static final class Seg {
        final char kind; // 't' text, 'v' {{ }}, 'b' {% %}
        final String text;

        Seg(char kind, String text) {
            this.kind = kind;
            this.text = text;
        }
    }

    private static final class Lexer {
        final String src;
        final List<Seg> out = new ArrayList<>();

        Lexer(String source) {
            // jinja2: every newline sequence becomes "\n" and one trailing newline is dropped (keep_trailing_newline=False).
            String s = source.replace("\r\n", "\n").replace('\r', '\n');
            if (s.endsWith("\n")) s = s.substring(0, s.length() - 1);
            this.src = s;
        }

        static boolean jws(char c) { // Python's \s for the `-` modifiers
            return Py.isSpace(c);
        }

        List<Seg> run() {
            int i = 0;
            boolean lineStarting = true;
            while (i < src.length()) {
                int open = nextOpen(i);
                String text = src.substring(i, open < 0 ? src.length() : open);
                if (open < 0) {
                    addText(text);
                    break;
                }
                char kind = src.charAt(open + 1); // '{', '%', '#'
                char mod = open + 2 < src.length() ? src.charAt(open + 2) : ' ';
                if (mod == '-') text = Py.rstrip(text);
                else if (kind != '{' && mod != '+') { // lstrip_blocks
                    int lpos = text.lastIndexOf('\n') + 1;
                    if (lpos > 0 || lineStarting) {
                        boolean blank = true;
                        for (int k = lpos; k < text.length(); k++) if (text.charAt(k) != ' ' && text.charAt(k) != '\t') blank = false;
                        if (blank) text = text.substring(0, lpos);
                    }
                }
                addText(text);
                int start = open + 2 + ((mod == '-' || mod == '+') ? 1 : 0);
                int close;
                String closer = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
                if (kind == '#') {
                    close = src.indexOf("#}", start);
                } else close = findClose(start, closer);
                if (close < 0) throw new TemplateError("unclosed " + src.substring(open, open + 2) + " tag");
                boolean rstrip = close > start && src.charAt(close - 1) == '-';
                boolean rplus = close > start && src.charAt(close - 1) == '+';
                String inner = src.substring(start, (rstrip || rplus) ? close - 1 : close);
                int after = close + 2;
                if (rstrip) while (after < src.length() && jws(src.charAt(after))) after++;
                else if (kind != '{' && !rplus && after < src.length() && src.charAt(after) == '\n') after++; // trim_blocks
                lineStarting = after > 0 && src.charAt(after - 1) == '\n';
                if (kind == '{') out.add(new Seg('v', inner));
                else if (kind == '%') {
                    String t = inner.trim();
                    if (t.equals("raw") || t.startsWith("raw ")) throw new TemplateError("{% raw %} is not supported");
                    out.add(new Seg('b', inner));
                }
                i = after;
            }
            return out;
        }

        void addText(String t) {
            if (!t.isEmpty()) out.add(new Seg('t', t));
        }

        int nextOpen(int from) {
            for (int k = from; k + 1 < src.length(); k++) {
                if (src.charAt(k) == '{') {
                    char c = src.charAt(k + 1);
                    if (c == '{' || c == '%' || c == '#') return k;
                }
            }
            return -1;
        }

        int findClose(int from, String closer) {
            char q = 0;
            for (int k = from; k < src.length(); k++) {
                char c = src.charAt(k);
                if (q != 0) {
                    if (c == '\\') k++;
                    else if (c == q) q = 0;
                } else if (c == '\'' || c == '"') q = c;
                else if (src.startsWith(closer, k)) return k;
            }
            return -1;
        }
    }

    // ================================================================================================ tokens

    private static final class Tok {
        final char type; // 'n' name, 's' string, 'i' int, 'f' float, 'o' operator, 'e' end
        final String text;
        final Object value;

        Tok(char type, String text, Object value) {
            this.type = type;
            this.text = text;
            this.value = value;
        }

        boolean is(String op) {
            return (type == 'o' || type == 'n') && text.equals(op);
        }
    }

    private static final String[] OPS = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "=",
        "(", ")", "[", "]", "{", "}", ",", ".", ":", "|"};

    private static List<Tok> tokenize(String s) {
        List<Tok> toks = new ArrayList<>();
        int i = 0;
        while (i < s.length()) {
            char c = s.charAt(i);
            if (Py.isSpace(c)) {
                i++;
                continue;
            }
            if (Character.isLetter(c) || c == '_') {
                int j = i;
                while (j < s.length() && (Character.isLetterOrDigit(s.charAt(j)) || s.charAt(j) == '_')) j++;
                toks.add(new Tok('n', s.substring(i, j), null));
                i = j;
            } else if (c >= '0' && c <= '9') {
                int j = i;
                while (j < s.length() && (Character.isDigit(s.charAt(j)) || s.charAt(j) == '_')) j++;
                boolean isFloat = false;
                if (j + 1 < s.length() && s.charAt(j) == '.' && Character.isDigit(s.charAt(j + 1))) {
                    isFloat = true;
                    j++;
                    while (j < s.length() && (Character.isDigit(s.charAt(j)) || s.charAt(j) == '_')) j++;
                }
                if (j < s.length() && (s.charAt(j) == 'e' || s.charAt(j) == 'E')) {
                    int k = j + 1;
                    if (k < s.length() && (s.charAt(k) == '+' || s.charAt(k) == '-')) k++;
                    if (k < s.length() && Character.isDigit(s.charAt(k))) {
                        isFloat = true;
                        j = k;
                        while (j < s.length() && Character.isDigit(s.charAt(j))) j++;
                    }
                }
                String num = s.substring(i, j).replace("_", "");
                toks.add(isFloat ? new Tok('f', num, Double.parseDouble(num)) : new Tok('i', num, Long.parseLong(num)));
                i = j;
            } else if (c == '\'' || c == '"') {
                StringBuilder sb = new StringBuilder();
                int j = i + 1;
                while (j < s.length() && s.charAt(j) != c) {
                    char d = s.charAt(j);
                    if (d == '\\' && j + 1 < s.length()) {
                        char e = s.charAt(++j);
                        switch (e) {
                            case 'n': sb.append('\n'); break;
                            case 't': sb.append('\t'); break;
                            case 'r': sb.append('\r'); break;
                            case '\\': sb.append('\\'); break;
                            case '\'': sb.append('\''); break;
                            case '"': sb.append('"'); break;
                            case '\n': break;
                            case '0': sb.append('\0'); break;
                            case 'u': sb.append((char) Integer.parseInt(s.substring(j + 1, j + 5), 16)); j += 4; break;
                            case 'x': sb.append((char) Integer.parseInt(s.substring(j + 1, j + 3), 16)); j += 2; break;
                            default: sb.append('\\').append(e);
                        }
                    } else sb.append(d);
                    j++;
                }
                if (j >= s.length()) throw new TemplateError("unterminated string in " + s.trim());
                toks.add(new Tok('s', s.substring(i, j + 1), sb.toString()));
                i = j + 1;
            } else {
                String op = null;
                for (String o : OPS) if (s.startsWith(o, i)) {
                    op = o;
                    break;
                }
                if (op == null) throw new TemplateError("unexpected character " + Py.repr(String.valueOf(c)) + " in " + s.trim());
                toks.add(new Tok('o', op, null));
                i += op.length();
            }
        }
        toks.add(new Tok('e', "<end>", null));
        return toks;
    }

    // ================================================================================================ AST

    private interface Node {}

    private static final class Text implements Node {
        final String text;

        Text(String t) {
            text = t;
        }
    }

    private static final class Output implements Node {
        final Expr expr;

        Output(Expr e) {
            expr = e;
        }
    }

    private static final class If implements Node {
        final List<Expr> conds = new ArrayList<>();
        final List<List<Node>> bodies = new ArrayList<>();
        List<Node> orElse;
    }

    private static final class For implements Node {
        List<String> targets;
        Expr iter;
        Expr filter;
        List<Node> body;
        List<Node> orElse;
    }

    private static final class Set implements Node {
        List<String> targets; // names; or a single "ns.attr"
        Expr value;
        List<Node> block;
    }

    private interface Expr {
        Object eval(Scope s);
    }

    // ================================================================================================ parsing

    private static final class Parser {
        final List<Seg> segs;
        int pos = 0;

        Parser(List<Seg> segs) {
            this.segs = segs;
        }

        static String keyword(Seg s) {
            String t = s.text.trim();
            int sp = 0;
            while (sp < t.length() && (Character.isLetterOrDigit(t.charAt(sp)) || t.charAt(sp) == '_')) sp++;
            return t.substring(0, sp);
        }

        /** Parses nodes until a block tag whose keyword is in `stop` (not consumed) or the end. */
        List<Node> parseBody(String... stop) {
            List<Node> nodes = new ArrayList<>();
            while (pos < segs.size()) {
                Seg s = segs.get(pos);
                if (s.kind == 't') {
                    nodes.add(new Text(s.text));
                    pos++;
                } else if (s.kind == 'v') {
                    ExprParser ep = new ExprParser(tokenize(s.text));
                    Expr e = ep.parseExpression();
                    ep.expectEnd();
                    nodes.add(new Output(e));
                    pos++;
                } else {
                    String kw = keyword(s);
                    if (Arrays.asList(stop).contains(kw)) return nodes;
                    pos++;
                    nodes.add(parseStatement(kw, s));
                }
            }
            if (stop.length > 0) throw new TemplateError("missing {% " + stop[stop.length - 1] + " %}");
            return nodes;
        }

        Node parseStatement(String kw, Seg s) {
            List<Tok> toks = tokenize(s.text);
            ExprParser ep = new ExprParser(toks);
            ep.next(); // the keyword
            switch (kw) {
                case "if": {
                    If node = new If();
                    node.conds.add(ep.parseExpression());
                    ep.expectEnd();
                    node.bodies.add(parseBody("elif", "else", "endif"));
                    while (true) {
                        Seg t = segs.get(pos++);
                        String k = keyword(t);
                        if (k.equals("endif")) break;
                        ExprParser e2 = new ExprParser(tokenize(t.text));
                        e2.next();
                        if (k.equals("elif")) {
                            node.conds.add(e2.parseExpression());
                            e2.expectEnd();
                            node.bodies.add(parseBody("elif", "else", "endif"));
                        } else {
                            e2.expectEnd();
                            node.orElse = parseBody("endif");
                        }
                    }
                    return node;
                }
                case "for": {
                    For node = new For();
                    node.targets = new ArrayList<>();
                    do {
                        node.targets.add(ep.expectName());
                    } while (ep.accept(","));
                    if (!ep.peek().is("in")) throw new TemplateError("expected 'in' in {% " + s.text.trim() + " %}");
                    ep.next();
                    node.iter = ep.parseExpression(false);
                    if (ep.peek().is("if")) {
                        ep.next();
                        node.filter = ep.parseExpression(false);
                    }
                    if (ep.peek().is("recursive")) throw new TemplateError("recursive loops are not supported");
                    ep.expectEnd();
                    node.body = parseBody("else", "endfor");
                    Seg t = segs.get(pos++);
                    if (keyword(t).equals("else")) {
                        node.orElse = parseBody("endfor");
                        pos++;
                    }
                    return node;
                }
                case "set": {
                    Set node = new Set();
                    node.targets = new ArrayList<>();
                    String first = ep.expectName();
                    if (ep.accept(".")) {
                        node.targets.add(first + "." + ep.expectName());
                    } else {
                        node.targets.add(first);
                        while (ep.accept(",")) node.targets.add(ep.expectName());
                    }
                    if (ep.accept("=")) {
                        node.value = ep.parseTupleOrExpression();
                        ep.expectEnd();
                    } else {
                        ep.expectEnd();
                        node.block = parseBody("endset");
                        pos++;
                    }
                    return node;
                }
                default:
                    throw new TemplateError("{% " + kw + " %} is not supported by this chat template renderer");
            }
        }
    }

    private static final class ExprParser {
        final List<Tok> toks;
        int i = 0;

        ExprParser(List<Tok> toks) {
            this.toks = toks;
        }

        Tok peek() {
            return toks.get(i);
        }

        Tok next() {
            return toks.get(i++);
        }

        boolean accept(String op) {
            if (peek().type == 'o' && peek().text.equals(op)) {
                i++;
                return true;
            }
            return false;
        }

        void expect(String op) {
            if (!accept(op)) throw new TemplateError("expected " + Py.repr(op) + ", got " + Py.repr(peek().text));
        }

        String expectName() {
            Tok t = next();
            if (t.type != 'n') throw new TemplateError("expected a name, got " + Py.repr(t.text));
            return t.text;
        }

        void expectEnd() {
            if (peek().type != 'e') throw new TemplateError("unexpected " + Py.repr(peek().text));
        }

        Expr parseExpression() {
            return parseExpression(true);
        }

        Expr parseTupleOrExpression() {
            Expr first = parseExpression();
            if (peek().type == 'o' && peek().text.equals(",")) {
                List<Expr> items = new ArrayList<>();
                items.add(first);
                while (accept(",")) {
                    if (peek().type == 'e') break;
                    items.add(parseExpression());
                }
                return s -> {
                    Tuple t = new Tuple();
                    for (Expr e : items) t.add(e.eval(s));
                    return t;
                };
            }
            return first;
        }

        Expr parseExpression(boolean withCondExpr) {
            return withCondExpr ? parseCondExpr() : parseOr();
        }

        Expr parseCondExpr() {
            Expr a = parseOr();
            while (peek().is("if")) {
                next();
                Expr cond = parseOr();
                Expr b = null;
                if (peek().is("else")) {
                    next();
                    b = parseCondExpr();
                }
                final Expr a0 = a, c0 = cond, b0 = b;
                a = s -> truthy(c0.eval(s)) ? a0.eval(s) : (b0 == null ? new Undefined("conditional expression", null) : b0.eval(s));
            }
            return a;
        }

        Expr parseOr() {
            Expr a = parseAnd();
            while (peek().is("or")) {
                next();
                final Expr l = a, r = parseAnd();
                a = s -> {
                    Object v = l.eval(s);
                    return truthy(v) ? v : r.eval(s);
                };
            }
            return a;
        }

        Expr parseAnd() {
            Expr a = parseNot();
            while (peek().is("and")) {
                next();
                final Expr l = a, r = parseNot();
                a = s -> {
                    Object v = l.eval(s);
                    return !truthy(v) ? v : r.eval(s);
                };
            }
            return a;
        }

        Expr parseNot() {
            if (peek().is("not")) {
                next();
                Expr e = parseNot();
                return s -> !truthy(e.eval(s));
            }
            return parseCompare();
        }

        Expr parseCompare() {
            Expr a = parseMath1();
            while (true) {
                Tok t = peek();
                String op;
                if (t.type == 'o' && Arrays.asList("==", "!=", "<", ">", "<=", ">=").contains(t.text)) {
                    op = t.text;
                    next();
                } else if (t.is("in")) {
                    op = "in";
                    next();
                } else if (t.is("not") && toks.get(i + 1).is("in")) {
                    op = "not in";
                    i += 2;
                } else break;
                final Expr l = a, r = parseMath1();
                final String o = op;
                a = s -> compare(o, l.eval(s), r.eval(s));
            }
            return a;
        }

        Expr parseMath1() {
            Expr a = parseConcat();
            while (peek().type == 'o' && (peek().text.equals("+") || peek().text.equals("-"))) {
                String op = next().text;
                final Expr l = a, r = parseConcat();
                a = s -> arith(op, l.eval(s), r.eval(s));
            }
            return a;
        }

        Expr parseConcat() {
            Expr a = parseMath2();
            if (!(peek().type == 'o' && peek().text.equals("~"))) return a;
            List<Expr> parts = new ArrayList<>();
            parts.add(a);
            while (accept("~")) parts.add(parseMath2());
            return s -> {
                StringBuilder sb = new StringBuilder();
                for (Expr e : parts) sb.append(toStr(e.eval(s)));
                return sb.toString();
            };
        }

        Expr parseMath2() {
            Expr a = parsePow();
            while (peek().type == 'o' && Arrays.asList("*", "/", "//", "%").contains(peek().text)) {
                String op = next().text;
                final Expr l = a, r = parsePow();
                a = s -> arith(op, l.eval(s), r.eval(s));
            }
            return a;
        }

        Expr parsePow() {
            Expr a = parseUnary(true);
            while (accept("**")) {
                final Expr l = a, r = parseUnary(true);
                a = s -> arith("**", l.eval(s), r.eval(s));
            }
            return a;
        }

        Expr parseUnary(boolean withFilter) {
            Expr node;
            if (accept("-")) {
                Expr e = parseUnary(false);
                node = s -> arith("-", 0L, e.eval(s));
            } else if (accept("+")) {
                node = parseUnary(false);
            } else node = parsePostfix(parsePrimary());
            if (withFilter) node = parseFilterExpr(node);
            return node;
        }

        Expr parsePrimary() {
            Tok t = next();
            switch (t.type) {
                case 'n':
                    switch (t.text) {
                        case "true": case "True": return s -> Boolean.TRUE;
                        case "false": case "False": return s -> Boolean.FALSE;
                        case "none": case "None": return s -> null;
                        default: {
                            String name = t.text;
                            return s -> s.lookup(name);
                        }
                    }
                case 's': {
                    StringBuilder sb = new StringBuilder((String) t.value);
                    while (peek().type == 's') sb.append((String) next().value);
                    String v = sb.toString();
                    return s -> v;
                }
                case 'i': case 'f': {
                    Object v = t.value;
                    return s -> v;
                }
                case 'o':
                    if (t.text.equals("(")) {
                        if (accept(")")) return s -> new Tuple();
                        Expr first = parseExpression();
                        if (accept(")")) return first;
                        List<Expr> items = new ArrayList<>();
                        items.add(first);
                        while (accept(",")) {
                            if (peek().is(")")) break;
                            items.add(parseExpression());
                        }
                        expect(")");
                        return s -> {
                            Tuple tu = new Tuple();
                            for (Expr e : items) tu.add(e.eval(s));
                            return tu;
                        };
                    }
                    if (t.text.equals("[")) {
                        List<Expr> items = new ArrayList<>();
                        while (!accept("]")) {
                            if (!items.isEmpty()) expect(",");
                            if (accept("]")) break;
                            items.add(parseExpression());
                        }
                        return s -> {
                            List<Object> l = new ArrayList<>();
                            for (Expr e : items) l.add(e.eval(s));
                            return l;
                        };
                    }
                    if (t.text.equals("{")) {
                        List<Expr[]> items = new ArrayList<>();
                        while (!accept("}")) {
                            if (!items.isEmpty()) expect(",");
                            if (accept("}")) break;
                            Expr k = parseExpression();
                            expect(":");
                            items.add(new Expr[] {k, parseExpression()});
                        }
                        return s -> {
                            Map<Object, Object> m = new LinkedHashMap<>();
                            for (Expr[] kv : items) m.put(kv[0].eval(s), kv[1].eval(s));
                            return m;
                        };
                    }
                    // fall through
                default:
                    throw new TemplateError("unexpected " + Py.repr(t.text) + " in expression");
            }
        }

        Expr parsePostfix(Expr node) {
            while (true) {
                if (accept(".")) {
                    Tok t = next();
                    if (t.type != 'n' && t.type != 'i') throw new TemplateError("expected an attribute name after '.'");
                    final Expr obj = node;
                    final String attr = t.text;
                    node = s -> getattr(obj.eval(s), attr);
                } else if (accept("[")) {
                    final Expr obj = node;
                    Expr[] slice = new Expr[3];
                    boolean isSlice = false;
                    int part = 0;
                    while (!accept("]")) {
                        if (accept(":")) {
                            isSlice = true;
                            part++;
                            if (part > 2) throw new TemplateError("bad slice");
                            continue;
                        }
                        slice[part] = parseExpression();
                    }
                    if (isSlice) {
                        final Expr a = slice[0], b = slice[1], c = slice[2];
                        node = s -> slice(obj.eval(s), a == null ? null : a.eval(s), b == null ? null : b.eval(s),
                                c == null ? null : c.eval(s));
                    } else {
                        final Expr k = slice[0];
                        node = s -> getitem(obj.eval(s), k.eval(s));
                    }
                } else if (peek().is("(")) {
                    node = parseCall(node);
                } else return node;
            }
        }

        Expr parseCall(Expr callee) {
            expect("(");
            List<Expr> args = new ArrayList<>();
            Map<String, Expr> kwargs = new LinkedHashMap<>();
            while (!accept(")")) {
                if (!args.isEmpty() || !kwargs.isEmpty()) {
                    expect(",");
                    if (accept(")")) break;
                }
                if (peek().type == 'n' && toks.get(i + 1).type == 'o' && toks.get(i + 1).text.equals("=")) {
                    String k = next().text;
                    next();
                    kwargs.put(k, parseExpression());
                } else args.add(parseExpression());
            }
            return s -> {
                Object f = callee.eval(s);
                List<Object> a = new ArrayList<>();
                for (Expr e : args) a.add(e.eval(s));
                Map<String, Object> kw = new LinkedHashMap<>();
                for (Map.Entry<String, Expr> e : kwargs.entrySet()) kw.put(e.getKey(), e.getValue().eval(s));
                if (f instanceof Undefined) throw ((Undefined) f).error();
                if (!(f instanceof Fn)) throw new TemplateError(Py.repr(typeName(f)) + " object is not callable");
                return ((Fn) f).call(a, kw);
            };
        }

        Expr parseFilterExpr(Expr node) {
            while (true) {
                if (accept("|")) {
                    String name = expectName();
                    List<Expr> args = new ArrayList<>();
                    Map<String, Expr> kwargs = new LinkedHashMap<>();
                    if (peek().is("(")) {
                        next();
                        while (!accept(")")) {
                            if (!args.isEmpty() || !kwargs.isEmpty()) {
                                expect(",");
                                if (accept(")")) break;
                            }
                            if (peek().type == 'n' && toks.get(i + 1).type == 'o' && toks.get(i + 1).text.equals("=")) {
                                String k = next().text;
                                next();
                                kwargs.put(k, parseExpression());
                            } else args.add(parseExpression());
                        }
                    }
                    if (!FILTERS.contains(name)) throw new TemplateError("no filter named " + Py.repr(name));
                    final Expr v = node;
                    node = s -> {
                        List<Object> a = new ArrayList<>();
                        for (Expr e : args) a.add(e.eval(s));
                        Map<String, Object> kw = new LinkedHashMap<>();
                        for (Map.Entry<String, Expr> e : kwargs.entrySet()) kw.put(e.getKey(), e.getValue().eval(s));
                        return filter(name, v.eval(s), a, kw);
                    };
                } else if (peek().is("is")) {
                    next();
                    boolean negate = false;
                    if (peek().is("not")) {
                        next();
                        negate = true;
                    }
                    String name = expectName();
                    if (name.equals("none")) name = "none";
                    if (!TESTS.contains(name)) throw new TemplateError("no test named " + Py.repr(name));
                    List<Expr> args = new ArrayList<>();
                    if (peek().is("(")) {
                        next();
                        while (!accept(")")) {
                            if (!args.isEmpty()) expect(",");
                            args.add(parseExpression());
                        }
                    } else if (peek().type == 's' || peek().type == 'i' || peek().type == 'f'
                            || (peek().type == 'n' && !Arrays.asList("and", "or", "else", "if", "not", "in", "is").contains(peek().text))) {
                        args.add(parsePostfix(parsePrimary()));
                    }
                    final Expr v = node;
                    final String tn = name;
                    final boolean neg = negate;
                    node = s -> {
                        List<Object> a = new ArrayList<>();
                        for (Expr e : args) a.add(e.eval(s));
                        return test(tn, v.eval(s), a) != neg;
                    };
                } else if (peek().is("(")) {
                    node = parseCall(node);
                } else return node;
            }
        }
    }

    // ================================================================================================ runtime values

    /** jinja2's Undefined: empty when printed or iterated, false, an error for anything else. */
    private static final class Undefined {
        final String name;
        final Object obj; // the object the attribute / item was missing from (null: a missing variable)
        final String message; // set for a missing list element

        Undefined(String name, Object obj) {
            this(name, obj, null);
        }

        Undefined(String name, Object obj, String message) {
            this.name = name;
            this.obj = obj;
            this.message = message;
        }

        TemplateError error() {
            if (message != null) return new TemplateError(message);
            if (obj == null) return new TemplateError(Py.repr(name) + " is undefined");
            return new TemplateError(Py.repr(typeName(obj) + " object") + " has no attribute " + Py.repr(name));
        }

        @Override
        public boolean equals(Object o) {
            return o instanceof Undefined;
        }

        @Override
        public int hashCode() {
            return 0;
        }
    }

    /** A Python tuple (printed with parentheses). */
    private static final class Tuple extends ArrayList<Object> {}

    private static final class Namespace {
        final Map<String, Object> attrs = new LinkedHashMap<>();
    }

    private interface Fn {
        Object call(List<Object> args, Map<String, Object> kwargs);
    }

    private static final class Loop {
        final int index0, length;
        final List<Object> items;

        Loop(int index0, List<Object> items) {
            this.index0 = index0;
            this.length = items.size();
            this.items = items;
        }

        Object attr(String name) {
            switch (name) {
                case "index": return (long) index0 + 1;
                case "index0": return (long) index0;
                case "revindex": return (long) (length - index0);
                case "revindex0": return (long) (length - index0 - 1);
                case "first": return index0 == 0;
                case "last": return index0 == length - 1;
                case "length": return (long) length;
                case "depth": return 1L;
                case "depth0": return 0L;
                case "previtem": return index0 > 0 ? items.get(index0 - 1) : new Undefined("previtem", null);
                case "nextitem": return index0 + 1 < length ? items.get(index0 + 1) : new Undefined("nextitem", null);
                case "cycle": return (Fn) (a, kw) -> a.isEmpty() ? new Undefined("cycle", null) : a.get(index0 % a.size());
                default: return new Undefined(name, this);
            }
        }
    }

    private static final class Scope {
        final Scope parent;
        final Map<String, Object> vars = new HashMap<>();

        Scope(Scope parent) {
            this.parent = parent;
        }

        Object lookup(String name) {
            for (Scope s = this; s != null; s = s.parent) if (s.vars.containsKey(name)) return s.vars.get(name);
            return new Undefined(name, null);
        }
    }

    // ================================================================================================ execution

    private static void exec(List<Node> nodes, Scope scope, StringBuilder out) {
        for (Node n : nodes) {
            if (n instanceof Text) out.append(((Text) n).text);
            else if (n instanceof Output) out.append(toStr(((Output) n).expr.eval(scope)));
            else if (n instanceof If) {
                If f = (If) n;
                boolean done = false;
                for (int k = 0; k < f.conds.size() && !done; k++) {
                    if (truthy(f.conds.get(k).eval(scope))) {
                        exec(f.bodies.get(k), scope, out);
                        done = true;
                    }
                }
                if (!done && f.orElse != null) exec(f.orElse, scope, out);
            } else if (n instanceof For) execFor((For) n, scope, out);
            else if (n instanceof Set) {
                Set st = (Set) n;
                Object v;
                if (st.block != null) {
                    StringBuilder sb = new StringBuilder();
                    exec(st.block, scope, sb);
                    v = sb.toString();
                } else v = st.value.eval(scope);
                String target = st.targets.get(0);
                int dot = target.indexOf('.');
                if (dot >= 0) {
                    Object ns = scope.lookup(target.substring(0, dot));
                    if (!(ns instanceof Namespace)) throw new TemplateError("cannot assign attribute on non-namespace object");
                    ((Namespace) ns).attrs.put(target.substring(dot + 1), v);
                } else if (st.targets.size() == 1) scope.vars.put(target, v);
                else {
                    List<Object> vals = iterate(v);
                    if (vals.size() != st.targets.size()) throw new TemplateError("cannot unpack " + vals.size() + " values into " + st.targets.size());
                    for (int k = 0; k < vals.size(); k++) scope.vars.put(st.targets.get(k), vals.get(k));
                }
            }
        }
    }

    private static void execFor(For f, Scope scope, StringBuilder out) {
        List<Object> items = iterate(f.iter.eval(scope));
        if (f.filter != null) {
            List<Object> kept = new ArrayList<>();
            for (Object it : items) {
                Scope s = new Scope(scope);
                bind(f.targets, it, s);
                if (truthy(f.filter.eval(s))) kept.add(it);
            }
            items = kept;
        }
        for (int k = 0; k < items.size(); k++) {
            Scope s = new Scope(scope); // each iteration: a fresh scope (jinja2: `set` in a loop does not leak)
            bind(f.targets, items.get(k), s);
            s.vars.put("loop", new Loop(k, items));
            exec(f.body, s, out);
        }
        if (items.isEmpty() && f.orElse != null) exec(f.orElse, scope, out);
    }

    private static void bind(List<String> targets, Object item, Scope s) {
        if (targets.size() == 1) s.vars.put(targets.get(0), item);
        else {
            List<Object> vals = iterate(item);
            if (vals.size() != targets.size()) throw new TemplateError("cannot unpack " + vals.size() + " values into " + targets.size());
            for (int k = 0; k < vals.size(); k++) s.vars.put(targets.get(k), vals.get(k));
        }
    }

    private static List<Object> range(List<Object> a) {
        long start = 0, stop, step = 1;
        if (a.size() == 1) stop = toLong(a.get(0));
        else {
            start = toLong(a.get(0));
            stop = toLong(a.get(1));
            if (a.size() > 2) step = toLong(a.get(2));
        }
        if (step == 0) throw new TemplateError("range() arg 3 must not be zero");
        List<Object> out = new ArrayList<>();
        for (long v = start; step > 0 ? v < stop : v > stop; v += step) out.add(v);
        return out;
    }

    // ================================================================================================ semantics

    static String typeName(Object v) {
        if (v instanceof Tuple) return "tuple";
        if (v instanceof Namespace) return "Namespace";
        if (v instanceof Loop) return "LoopContext";
        if (v instanceof Fn) return "function";
        return OpParser.typeName(v);
    }

    static boolean truthy(Object v) {
        if (v == null || v instanceof Undefined) return false;
        if (v instanceof Boolean) return (Boolean) v;
        if (v instanceof Long) return (Long) v != 0;
        if (v instanceof Double) return (Double) v != 0.0;
        if (v instanceof String) return !((String) v).isEmpty();
        if (v instanceof List) return !((List<?>) v).isEmpty();
        if (v instanceof Map) return !((Map<?, ?>) v).isEmpty();
        return true;
    }

    static String toStr(Object v) {
        if (v instanceof Undefined) return "";
        if (v instanceof Tuple) {
            Tuple t = (Tuple) v;
            List<String> parts = new ArrayList<>();
            for (Object o : t) parts.add(repr(o));
            return "(" + String.join(", ", parts) + (t.size() == 1 ? ",)" : ")");
        }
        if (v instanceof String) return (String) v;
        return repr(v);
    }

    static String repr(Object v) {
        if (v instanceof Tuple) return toStr(v);
        if (v instanceof List) {
            List<String> parts = new ArrayList<>();
            for (Object o : (List<?>) v) parts.add(repr(o));
            return "[" + String.join(", ", parts) + "]";
        }
        if (v instanceof Map) {
            List<String> parts = new ArrayList<>();
            for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) parts.add(repr(e.getKey()) + ": " + repr(e.getValue()));
            return "{" + String.join(", ", parts) + "}";
        }
        if (v instanceof Undefined) return "Undefined";
        if (v instanceof Namespace) return "<Namespace " + repr(((Namespace) v).attrs) + ">";
        return Py.repr(v);
    }

    static List<Object> iterate(Object v) {
        if (v instanceof Undefined) return new ArrayList<>();
        if (v instanceof List) return new ArrayList<>((List<?>) v);
        if (v instanceof Map) return new ArrayList<Object>(((Map<?, ?>) v).keySet());
        if (v instanceof String) {
            List<Object> out = new ArrayList<>();
            String s = (String) v;
            for (int k = 0; k < s.length(); ) {
                int cp = s.codePointAt(k);
                out.add(new String(Character.toChars(cp)));
                k += Character.charCount(cp);
            }
            return out;
        }
        throw new TemplateError(Py.repr(typeName(v) + " object") + " is not iterable");
    }

    static long toLong(Object v) {
        if (v instanceof Long) return (Long) v;
        if (v instanceof Boolean) return ((Boolean) v) ? 1 : 0;
        if (v instanceof Double) return (long) (double) (Double) v;
        throw new TemplateError("expected an integer, got " + typeName(v));
    }

    static boolean isNum(Object v) {
        return v instanceof Long || v instanceof Double || v instanceof Boolean;
    }

    static boolean eq(Object a, Object b) {
        if (a instanceof Undefined || b instanceof Undefined) return a instanceof Undefined && b instanceof Undefined;
        if (isNum(a) && isNum(b)) {
            if (a instanceof Double || b instanceof Double) return num(a) == num(b);
            return toLong(a) == toLong(b);
        }
        if (a instanceof List && b instanceof List) {
            List<?> x = (List<?>) a, y = (List<?>) b;
            if ((a instanceof Tuple) != (b instanceof Tuple) || x.size() != y.size()) return false;
            for (int k = 0; k < x.size(); k++) if (!eq(x.get(k), y.get(k))) return false;
            return true;
        }
        return Objects.equals(a, b);
    }

    static double num(Object v) {
        if (v instanceof Boolean) return ((Boolean) v) ? 1 : 0;
        return ((Number) v).doubleValue();
    }

    static Object compare(String op, Object a, Object b) {
        switch (op) {
            case "==": return eq(a, b);
            case "!=": return !eq(a, b);
            case "in": return contains(b, a);
            case "not in": return !contains(b, a);
            default:
        }
        if (a instanceof Undefined) throw ((Undefined) a).error();
        if (b instanceof Undefined) throw ((Undefined) b).error();
        int c;
        if (isNum(a) && isNum(b)) c = Double.compare(num(a), num(b));
        else if (a instanceof String && b instanceof String) c = Py.CODE_POINT_ORDER.compare((String) a, (String) b);
        else throw new TemplateError("'" + op + "' not supported between instances of " + Py.repr(typeName(a)) + " and " + Py.repr(typeName(b)));
        switch (op) {
            case "<": return c < 0;
            case ">": return c > 0;
            case "<=": return c <= 0;
            default: return c >= 0;
        }
    }

    static boolean contains(Object container, Object item) {
        if (container instanceof Undefined) throw ((Undefined) container).error();
        if (container instanceof String) {
            if (!(item instanceof String)) throw new TemplateError("'in <string>' requires string as left operand, not " + typeName(item));
            return ((String) container).contains((String) item);
        }
        if (container instanceof Map) {
            for (Object k : ((Map<?, ?>) container).keySet()) if (eq(k, item)) return true;
            return false;
        }
        if (container instanceof List) {
            for (Object o : (List<?>) container) if (eq(o, item)) return true;
            return false;
        }
        throw new TemplateError("argument of type " + Py.repr(typeName(container)) + " is not iterable");
    }

    static Object arith(String op, Object a, Object b) {
        if (a instanceof Undefined) throw ((Undefined) a).error();
        if (b instanceof Undefined) throw ((Undefined) b).error();
        if (op.equals("+")) {
            if (a instanceof String && b instanceof String) return (String) a + b;
            if (a instanceof List && b instanceof List && (a instanceof Tuple) == (b instanceof Tuple)) {
                List<Object> l = a instanceof Tuple ? new Tuple() : new ArrayList<>();
                l.addAll((List<?>) a);
                l.addAll((List<?>) b);
                return l;
            }
            if (a instanceof String) throw new TemplateError("can only concatenate str (not " + Py.repr(typeName(b)) + ") to str");
        }
        if (op.equals("*") && a instanceof String && b instanceof Long) return repeat((String) a, (Long) b);
        if (!isNum(a) || !isNum(b))
            throw new TemplateError("unsupported operand type(s) for " + op + ": " + Py.repr(typeName(a)) + " and " + Py.repr(typeName(b)));
        boolean ints = !(a instanceof Double) && !(b instanceof Double);
        switch (op) {
            case "+": return ints ? (Object) (toLong(a) + toLong(b)) : (Object) (num(a) + num(b));
            case "-": return ints ? (Object) (toLong(a) - toLong(b)) : (Object) (num(a) - num(b));
            case "*": return ints ? (Object) (toLong(a) * toLong(b)) : (Object) (num(a) * num(b));
            case "/":
                if (num(b) == 0) throw new TemplateError("division by zero");
                return num(a) / num(b);
            case "//":
                if (num(b) == 0) throw new TemplateError("integer division or modulo by zero");
                return ints ? (Object) Math.floorDiv(toLong(a), toLong(b)) : (Object) Math.floor(num(a) / num(b));
            case "%":
                if (num(b) == 0) throw new TemplateError("integer division or modulo by zero");
                if (ints) return Math.floorMod(toLong(a), toLong(b));
                double m = num(a) % num(b);
                if (m != 0 && (m < 0) != (num(b) < 0)) m += num(b);
                return m;
            case "**":
                if (ints && toLong(b) >= 0) {
                    long r = 1;
                    for (long k = 0; k < toLong(b); k++) r *= toLong(a);
                    return r;
                }
                return Math.pow(num(a), num(b));
            default: throw new TemplateError("unknown operator " + op);
        }
    }

    static String repeat(String s, long n) {
        StringBuilder sb = new StringBuilder();
        for (long k = 0; k < n; k++) sb.append(s);
        return sb.toString();
    }

    static Object getattr(Object obj, String attr) {
        if (obj instanceof Undefined) throw ((Undefined) obj).error();
        if (obj instanceof Loop) return ((Loop) obj).attr(attr);
        if (obj instanceof Namespace) {
            Namespace ns = (Namespace) obj;
            return ns.attrs.containsKey(attr) ? ns.attrs.get(attr) : new Undefined(attr, obj);
        }
        Object m = method(obj, attr);
        if (m != null) return m;
        if (obj instanceof Map) {
            Map<?, ?> map = (Map<?, ?>) obj;
            if (map.containsKey(attr)) return map.get(attr);
        }
        if (obj instanceof List && attr.matches("\\d+")) return getitem(obj, Long.parseLong(attr));
        return new Undefined(attr, obj);
    }

    static Object getitem(Object obj, Object key) {
        if (obj instanceof Undefined) throw ((Undefined) obj).error();
        if (obj instanceof Map) {
            Map<?, ?> map = (Map<?, ?>) obj;
            for (Map.Entry<?, ?> e : map.entrySet()) if (eq(e.getKey(), key)) return e.getValue();
        } else if ((obj instanceof List || obj instanceof String) && (key instanceof Long || key instanceof Boolean)) {
            int n = obj instanceof List ? ((List<?>) obj).size() : ((String) obj).codePointCount(0, ((String) obj).length());
            long k = toLong(key);
            if (k < 0) k += n;
            if (k >= 0 && k < n) {
                if (obj instanceof List) return ((List<?>) obj).get((int) k);
                String s = (String) obj;
                int off = s.offsetByCodePoints(0, (int) k);
                return new String(Character.toChars(s.codePointAt(off)));
            }
            return new Undefined(String.valueOf(key), obj, typeName(obj) + " object has no element " + key);
        }
        if (key instanceof String) {
            Object v = getattr(obj, (String) key);
            if (!(v instanceof Undefined)) return v;
        }
        return new Undefined(String.valueOf(key), obj);
    }

    static Object slice(Object obj, Object start, Object stop, Object step) {
        if (obj instanceof Undefined) throw ((Undefined) obj).error();
        List<Object> items;
        boolean isStr = obj instanceof String;
        if (isStr) items = iterate(obj);
        else if (obj instanceof List) items = new ArrayList<>((List<?>) obj);
        else throw new TemplateError(Py.repr(typeName(obj)) + " object is not subscriptable");
        int n = items.size();
        long st = step == null ? 1 : toLong(step);
        if (st == 0) throw new TemplateError("slice step cannot be zero");
        long a, b;
        if (st > 0) {
            a = start == null ? 0 : clamp(toLong(start), n, 0, n);
            b = stop == null ? n : clamp(toLong(stop), n, 0, n);
        } else {
            a = start == null ? n - 1 : clamp(toLong(start), n, -1, n - 1);
            b = stop == null ? -1 : clamp(toLong(stop), n, -1, n - 1);
        }
        List<Object> out = obj instanceof Tuple ? new Tuple() : new ArrayList<>();
        for (long k = a; st > 0 ? k < b : k > b; k += st) out.add(items.get((int) k));
        if (isStr) {
            StringBuilder sb = new StringBuilder();
            for (Object o : out) sb.append((String) o);
            return sb.toString();
        }
        return out;
    }

    static long clamp(long v, int n, long lo, long hi) {
        if (v < 0) v += n;
        return Math.max(lo, Math.min(hi, v));
    }

    /** The str / dict methods templates call; null when `attr` is not one of them. */
    static Object method(Object obj, String attr) {
        if (obj instanceof String) {
            String s = (String) obj;
            switch (attr) {
                case "strip": return (Fn) (a, kw) -> a.isEmpty() || a.get(0) == null ? Py.strip(s) : stripChars(s, (String) a.get(0), true, true);
                case "lstrip": return (Fn) (a, kw) -> a.isEmpty() || a.get(0) == null ? Py.lstrip(s) : stripChars(s, (String) a.get(0), true, false);
                case "rstrip": return (Fn) (a, kw) -> a.isEmpty() || a.get(0) == null ? Py.rstrip(s) : stripChars(s, (String) a.get(0), false, true);
                case "upper": return (Fn) (a, kw) -> s.toUpperCase(java.util.Locale.ROOT);
                case "lower": return (Fn) (a, kw) -> s.toLowerCase(java.util.Locale.ROOT);
                case "title": return (Fn) (a, kw) -> title(s);
                case "capitalize": return (Fn) (a, kw) -> capitalize(s);
                case "startswith": return (Fn) (a, kw) -> affix(s, a.get(0), true);
                case "endswith": return (Fn) (a, kw) -> affix(s, a.get(0), false);
                case "replace": return (Fn) (a, kw) -> s.replace((String) a.get(0), (String) a.get(1));
                case "split": return (Fn) (a, kw) -> {
                    Object sep = a.isEmpty() ? kw.get("sep") : a.get(0);
                    List<Object> out = new ArrayList<>();
                    if (sep == null) out.addAll(Py.split(s));
                    else {
                        String sp = (String) sep;
                        int from = 0, at;
                        while ((at = s.indexOf(sp, from)) >= 0) {
                            out.add(s.substring(from, at));
                            from = at + sp.length();
                        }
                        out.add(s.substring(from));
                    }
                    return out;
                };
                case "join": return (Fn) (a, kw) -> {
                    List<String> parts = new ArrayList<>();
                    for (Object o : iterate(a.get(0))) parts.add((String) o);
                    return String.join(s, parts);
                };
                default: return null;
            }
        }
        if (obj instanceof Map) {
            Map<?, ?> m = (Map<?, ?>) obj;
            switch (attr) {
                case "get": return (Fn) (a, kw) -> {
                    for (Map.Entry<?, ?> e : m.entrySet()) if (eq(e.getKey(), a.get(0))) return e.getValue();
                    return a.size() > 1 ? a.get(1) : null;
                };
                case "items": return (Fn) (a, kw) -> {
                    List<Object> out = new ArrayList<>();
                    for (Map.Entry<?, ?> e : m.entrySet()) {
                        Tuple t = new Tuple();
                        t.add(e.getKey());
                        t.add(e.getValue());
                        out.add(t);
                    }
                    return out;
                };
                case "keys": return (Fn) (a, kw) -> new ArrayList<Object>(m.keySet());
                case "values": return (Fn) (a, kw) -> new ArrayList<Object>(m.values());
                default: return null;
            }
        }
        if (obj instanceof List && Arrays.asList("append", "extend", "pop", "insert", "remove", "clear", "sort", "reverse").contains(attr))
            throw new TemplateError("access to attribute " + Py.repr(attr) + " of " + Py.repr(typeName(obj)) + " object is unsafe.");
        return null;
    }

    static boolean affix(String s, Object arg, boolean prefix) {
        if (arg instanceof List) {
            for (Object o : (List<?>) arg) if (prefix ? s.startsWith((String) o) : s.endsWith((String) o)) return true;
            return false;
        }
        return prefix ? s.startsWith((String) arg) : s.endsWith((String) arg);
    }

    static String stripChars(String s, String chars, boolean left, boolean right) {
        int a = 0, b = s.length();
        while (left && a < b && chars.indexOf(s.charAt(a)) >= 0) a++;
        while (right && b > a && chars.indexOf(s.charAt(b - 1)) >= 0) b--;
        return s.substring(a, b);
    }

    static String capitalize(String s) {
        if (s.isEmpty()) return s;
        return s.substring(0, 1).toUpperCase(java.util.Locale.ROOT) + s.substring(1).toLowerCase(java.util.Locale.ROOT);
    }

    static String title(String s) {
        StringBuilder sb = new StringBuilder();
        boolean prevCased = false;
        for (int k = 0; k < s.length(); k++) {
            char c = s.charAt(k);
            sb.append(prevCased ? Character.toLowerCase(c) : Character.toTitleCase(c));
            prevCased = Character.isLetter(c);
        }
        return sb.toString();
    }

    private static final List<String> FILTERS = Arrays.asList("trim", "upper", "lower", "capitalize", "title", "length",
            "count", "first", "last", "join", "default", "d", "tojson", "string", "int", "float", "list", "items",
            "reverse", "replace", "safe", "map", "selectattr", "rejectattr", "abs", "round", "unique", "sum", "min", "max");

    static Object filter(String name, Object v, List<Object> a, Map<String, Object> kw) {
        if (!name.equals("default") && !name.equals("d") && v instanceof Undefined && !name.equals("length") && !name.equals("count")
                && !name.equals("string") && !name.equals("list") && !name.equals("join") && !name.equals("first") && !name.equals("last"))
            throw ((Undefined) v).error();
        switch (name) {
            case "trim": return a.isEmpty() || a.get(0) == null ? Py.strip(toStr(v)) : stripChars(toStr(v), (String) a.get(0), true, true);
            case "upper": return toStr(v).toUpperCase(java.util.Locale.ROOT);
            case "lower": return toStr(v).toLowerCase(java.util.Locale.ROOT);
            case "capitalize": return capitalize(toStr(v));
            case "title": return title(toStr(v));
            case "length": case "count":
                if (v instanceof String) return (long) ((String) v).codePointCount(0, ((String) v).length());
                if (v instanceof Map) return (long) ((Map<?, ?>) v).size();
                return (long) iterate(v).size();
            case "first": {
                List<Object> l = iterate(v);
                return l.isEmpty() ? new Undefined("first", v) : l.get(0);
            }
            case "last": {
                List<Object> l = iterate(v);
                return l.isEmpty() ? new Undefined("last", v) : l.get(l.size() - 1);
            }
            case "join": {
                String sep = a.isEmpty() ? (String) kw.getOrDefault("d", "") : (String) a.get(0);
                Object attrName = a.size() > 1 ? a.get(1) : kw.get("attribute");
                List<String> parts = new ArrayList<>();
                for (Object o : iterate(v)) parts.add(toStr(attrName != null ? getitem(o, attrName) : o));
                return String.join(sep, parts);
            }
            case "default": case "d": {
                Object dflt = a.isEmpty() ? kw.getOrDefault("default_value", "") : a.get(0);
                boolean bool = a.size() > 1 ? truthy(a.get(1)) : truthy(kw.get("boolean"));
                if (v instanceof Undefined || (bool && !truthy(v))) return dflt;
                return v;
            }
            case "tojson": {
                Object ind = a.isEmpty() ? kw.get("indent") : a.get(0);
                String s = Json.dumps(plain(v), ind == null ? -1 : (int) toLong(ind), true, true);
                return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace("'", "\\u0027");
            }
            case "string": return toStr(v);
            case "int":
                if (v instanceof String) {
                    try {
                        return Long.parseLong(Py.strip((String) v));
                    } catch (NumberFormatException e) {
                        return a.isEmpty() ? 0L : a.get(0);
                    }
                }
                return isNum(v) ? (Object) toLong(v) : (a.isEmpty() ? 0L : a.get(0));
            case "float":
                if (v instanceof String) {
                    try {
                        return Double.parseDouble(Py.strip((String) v));
                    } catch (NumberFormatException e) {
                        return a.isEmpty() ? 0.0 : a.get(0);
                    }
                }
                return isNum(v) ? (Object) num(v) : (a.isEmpty() ? 0.0 : a.get(0));
            case "list": return iterate(v);
            case "items": return ((Fn) method(v, "items")).call(new ArrayList<>(), new LinkedHashMap<>());
            case "reverse": {
                if (v instanceof String) return new StringBuilder((String) v).reverse().toString();
                List<Object> l = iterate(v);
                java.util.Collections.reverse(l);
                return l;
            }
            case "replace": return toStr(v).replace(toStr(a.get(0)), toStr(a.get(1)));
            case "safe": return v;
            case "abs": return v instanceof Double ? (Object) Math.abs((Double) v) : (Object) Math.abs(toLong(v));
            case "map": {
                List<Object> out = new ArrayList<>();
                Object attr = kw.get("attribute");
                for (Object o : iterate(v)) {
                    if (attr != null) {
                        Object r = getitem(o, attr);
                        out.add(r instanceof Undefined && kw.containsKey("default") ? kw.get("default") : r);
                    } else if (!a.isEmpty()) out.add(filter((String) a.get(0), o, a.subList(1, a.size()), new LinkedHashMap<>()));
                    else out.add(o);
                }
                return out;
            }
            case "selectattr": case "rejectattr": {
                List<Object> out = new ArrayList<>();
                for (Object o : iterate(v)) {
                    Object val = getitem(o, a.get(0));
                    boolean ok = a.size() > 1 ? test((String) a.get(1), val, a.subList(2, a.size())) : truthy(val);
                    if (ok == name.equals("selectattr")) out.add(o);
                }
                return out;
            }
            case "unique": {
                List<Object> out = new ArrayList<>();
                for (Object o : iterate(v)) if (!contains(out, o)) out.add(o);
                return out;
            }
            case "sum": {
                Object acc = 0L;
                for (Object o : iterate(v)) acc = arith("+", acc, o);
                return acc;
            }
            case "min": case "max": {
                List<Object> l = iterate(v);
                if (l.isEmpty()) return new Undefined(name, v);
                Object best = l.get(0);
                for (Object o : l) if (truthy(compare(name.equals("min") ? "<" : ">", o, best))) best = o;
                return best;
            }
            case "round": {
                double x = num(v);
                long prec = a.isEmpty() ? 0 : toLong(a.get(0));
                double f = Math.pow(10, prec);
                return Math.rint(x * f) / f;
            }
            default: throw new TemplateError("no filter named " + Py.repr(name));
        }
    }

    /** A template value as the plain JSON model (tuples -> lists, namespaces -> their attributes). */
    static Object plain(Object v) {
        if (v instanceof Undefined) throw ((Undefined) v).error();
        if (v instanceof List) {
            List<Object> out = new ArrayList<>();
            for (Object o : (List<?>) v) out.add(plain(o));
            return out;
        }
        if (v instanceof Map) {
            Map<String, Object> out = new LinkedHashMap<>();
            for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) out.put(String.valueOf(e.getKey()), plain(e.getValue()));
            return out;
        }
        return v;
    }

    private static final List<String> TESTS = Arrays.asList("defined", "undefined", "none", "string", "number",
            "integer", "float", "mapping", "iterable", "sequence", "boolean", "true", "false", "even", "odd",
            "divisibleby", "equalto", "eq", "sameas", "in", "lower", "upper", "callable", "ne", "gt", "ge", "lt", "le");

    static boolean test(String name, Object v, List<Object> a) {
        switch (name) {
            case "defined": return !(v instanceof Undefined);
            case "undefined": return v instanceof Undefined;
            case "none": return v == null;
            case "string": return v instanceof String;
            case "number": return v instanceof Long || v instanceof Double;
            case "integer": return v instanceof Long;
            case "float": return v instanceof Double;
            case "boolean": return v instanceof Boolean;
            case "true": return Boolean.TRUE.equals(v);
            case "false": return Boolean.FALSE.equals(v);
            case "mapping": return v instanceof Map;
            case "iterable": return v instanceof List || v instanceof Map || v instanceof String || v instanceof Undefined;
            case "sequence": return v instanceof List || v instanceof Map || v instanceof String;
            case "callable": return v instanceof Fn;
            case "even": return toLong(v) % 2 == 0;
            case "odd": return toLong(v) % 2 != 0;
            case "divisibleby": return toLong(v) % toLong(a.get(0)) == 0;
            case "equalto": case "eq": return eq(v, a.get(0));
            case "ne": return !eq(v, a.get(0));
            case "gt": return truthy(compare(">", v, a.get(0)));
            case "ge": return truthy(compare(">=", v, a.get(0)));
            case "lt": return truthy(compare("<", v, a.get(0)));
            case "le": return truthy(compare("<=", v, a.get(0)));
            case "sameas": return v == a.get(0) || (v != null && v.equals(a.get(0)) && (v instanceof Boolean));
            case "in": return contains(a.get(0), v);
            case "lower": return v instanceof String && v.equals(((String) v).toLowerCase(java.util.Locale.ROOT));
            case "upper": return v instanceof String && v.equals(((String) v).toUpperCase(java.util.Locale.ROOT));
            default: throw new TemplateError("no test named " + Py.repr(name));
        }
    }
}
