package org.memlora.core;

import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;
import org.json.JSONTokener;

/**
 * Bundle files (manifest.json, tokenizer.json, genai_config.json) and profiler jobs read with {@code org.json} (part of
 * Android; Debian's libandroid-json-java on the JVM), handed out as plain Java values: object = {@code LinkedHashMap}
 * in document order, array = {@code ArrayList}, integer = {@code Long}, other numbers = {@code Double}, null = null.
 * Model output is not read here: its parser (OpParser) is strict and bounded where org.json is lenient.
 */
public final class JsonTree {
    private JsonTree() {}

    /** One JSON document; IllegalArgumentException("invalid JSON: ...") when it is not one (or nests too deeply). */
    public static Object parse(String text) {
        try {
            JSONTokener t = new JSONTokener(text);
            Object v = t.nextValue();
            if (t.nextClean() != 0) throw new IllegalArgumentException("invalid JSON: extra data after the value");
            return plain(v);
        } catch (JSONException e) {
            throw new IllegalArgumentException("invalid JSON: " + e.getMessage(), e);
        } catch (StackOverflowError e) {
            throw new IllegalArgumentException("invalid JSON: nested too deeply");
        }
    }

    static Object plain(Object v) {
        if (v instanceof JSONObject) {
            JSONObject o = (JSONObject) v;
            Map<String, Object> m = new LinkedHashMap<>();
            for (Iterator<String> it = o.keys(); it.hasNext(); ) {
                String k = it.next();
                m.put(k, plain(o.opt(k)));
            }
            return m;
        }
        if (v instanceof JSONArray) {
            JSONArray a = (JSONArray) v;
            List<Object> l = new ArrayList<>(a.length());
            for (int i = 0; i < a.length(); i++) l.add(plain(a.opt(i)));
            return l;
        }
        if (v instanceof Integer) return ((Integer) v).longValue();
        return v == JSONObject.NULL ? null : v;
    }

    /** A JSON value's type as messages name it (runtimes/manifest.py {@code kind}). */
    static String kind(Object v) {
        if (v == null) return "null";
        if (v instanceof Boolean) return "a boolean";
        if (v instanceof Long || v instanceof java.math.BigInteger) return "an integer";
        if (v instanceof Number) return "a number";
        if (v instanceof String) return "a string";
        if (v instanceof List) return "an array";
        return "an object";
    }

    /** A value in a message: strings JSON-quoted, so that control characters cannot break the line. */
    static String quote(Object v) {
        return v instanceof String ? JSONObject.quote((String) v) : String.valueOf(v);
    }

    @SuppressWarnings("unchecked")
    public static Map<String, Object> obj(Object v, String what) {
        if (!(v instanceof Map)) throw new IllegalArgumentException(what + ": expected an object");
        return (Map<String, Object>) v;
    }

    @SuppressWarnings("unchecked")
    public static List<Object> arr(Object v, String what) {
        if (!(v instanceof List)) throw new IllegalArgumentException(what + ": expected an array");
        return (List<Object>) v;
    }

    /** A map or list as JSON text ({@code org.json}'s writer, nested maps and lists included; indent 0: one line). */
    public static String write(Object mapOrList, int indent) {
        try {
            Object w = JSONObject.wrap(mapOrList);
            if (w instanceof JSONObject) return indent > 0 ? ((JSONObject) w).toString(indent) : w.toString();
            return indent > 0 ? ((JSONArray) w).toString(indent) : w.toString();
        } catch (JSONException | ClassCastException e) {
            throw new IllegalArgumentException("not writable as JSON: " + e.getMessage(), e);
        }
    }
}
