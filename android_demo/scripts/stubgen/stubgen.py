#!/usr/bin/env python3
"""Android API stub sources from a metalava signature file (`// Signature format: 2.0`, the SDK's api/current.txt).

    stubgen.py CURRENT_TXT JDK_CLASSES OUT_DIR

The SDK's android.jar is itself generated this way (metalava: the API signatures, bodies `throw new
RuntimeException("Stub!")`). This writes Java sources with the file's classes, interfaces, enums, annotation types,
nested classes, generics, constructors, methods (with throws), and fields with their constant values, so that
javac turns them into a compile-only jar that Kotlin can compile an app against: calls to a method that does not
exist, a wrong argument type, a missing constant all fail as they would against android.jar.

What it does not carry over, on purpose (each would need the framework's hidden classes or is not API):
- Packages the JDK also has (java.*, javax.* ...): Kotlin resolves those against the JDK the check runs on, not
  Android's libcore. JDK_CLASSES lists the JDK's classes (`jimage list`), one dotted name a line.
- A declaration whose types are neither in the file nor in the JDK (in Android 11+ the libcore, ICU and mainline
  module APIs live in other files): the class is dropped if its superclass or a type bound is unknown, the member
  or interface otherwise, repeated until everything left resolves. The app uses none of them; a use would fail to
  compile (an unresolved reference), not pass.
- Annotations other than @Deprecated and the nullness ones: @NonNull / @Nullable become androidx.annotation's
  RecentlyNonNull / RecentlyNullable, which Kotlin reads as nullness (warnings, errors under -Werror).
Additions that are not API, so that javac accepts the stubs: every class gets a `protected C(memlora.stub.Marker)`
constructor, which subclass stubs call (the real constructors they call may be hidden; a JDK superclass's is found
with javap); a concrete class re-declares the abstract methods it inherits but the file leaves out (metalava omits
overrides); non-constant final fields get a non-constant initializer. Bare type names are java.lang's (the format
drops that prefix) and are written out in full.
"""
import os
import re
import subprocess
import sys

MODS = {"public", "protected", "static", "final", "abstract", "default", "transient", "volatile", "sealed"}
PRIMS = {"boolean", "byte", "char", "short", "int", "long", "float", "double", "void"}
KEYWORDS = PRIMS | {"extends", "super", "?"}
IDENT = re.compile(r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*")
NULLNESS = {"NonNull": "@androidx.annotation.RecentlyNonNull", "Nullable": "@androidx.annotation.RecentlyNullable"}
HELPER = "memlora.stub"


def take_annotations(s):
    """Leading annotations of s -> (kept annotation sources, rest). Nested parentheses and strings are skipped."""
    kept = []
    s = s.lstrip()
    while s.startswith("@"):
        m = re.match(r"@([\w.]+)", s)
        name, i = m.group(1), m.end()
        if i < len(s) and s[i] == "(":
            depth, q = 0, None
            while True:
                c = s[i]
                if q:
                    if c == "\\":
                        i += 1
                    elif c == q:
                        q = None
                elif c in "\"'":
                    q = c
                elif c == "(":
                    depth += 1
                elif c == ")":
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                i += 1
        short = name.rsplit(".", 1)[-1]
        if short in NULLNESS:
            kept.append(NULLNESS[short])
        elif short == "Deprecated":
            kept.append("@Deprecated")
        s = s[i:].lstrip()
    return kept, s


def strip_annotations(s):
    """Every annotation inside s (type arguments, array components) removed."""
    out = []
    while "@" in s:
        i = s.index("@")
        out.append(s[:i])
        _, s = take_annotations(s[i:])
    return "".join(out) + s


def split_top(s, sep=","):
    """s split at sep outside <...>, (...), {...} and quotes."""
    parts, depth, cur, q = [], 0, [], None
    for c in s:
        if q:
            q = None if c == q else q
        elif c in "\"'":
            q = c
        elif c in "<({":
            depth += 1
        elif c in ">)}":
            depth -= 1
        if c == sep and depth == 0 and not q:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


def take_type(s):
    """A type at the start of s (with type arguments, arrays, varargs) -> (type, rest)."""
    s = s.lstrip()
    i, depth = 0, 0
    while i < len(s):
        c = s[i]
        if c == "<":
            depth += 1
        elif c == ">":
            depth -= 1
        elif c == " " and depth == 0:
            break
        i += 1
    return s[:i], s[i:].lstrip()


def type_params(s):
    """'<T extends X, U>' at the start of s -> (the text, [names], rest); ('', [], s) when there is none."""
    s = s.lstrip()
    if not s.startswith("<"):
        return "", [], s
    depth = 0
    for i, c in enumerate(s):
        depth += c == "<"
        depth -= c == ">"
        if depth == 0:
            text = s[: i + 1]
            names = [p.split()[0] for p in split_top(text[1:-1])]
            return text, names, s[i + 1:].lstrip()
    raise ValueError(s)


class Cls:
    def __init__(self, pkg, name, kind, mods, annos, tparams, tnames, extends, implements):
        self.pkg, self.name, self.kind, self.mods, self.annos = pkg, name, kind, mods, annos
        self.tparams, self.tnames, self.extends, self.implements = tparams, tnames, extends, implements
        self.members = []  # (kind, dict)
        self.fqn = f"{pkg}.{name}"
        self.outer = f"{pkg}.{name.rsplit('.', 1)[0]}" if "." in name else None


def parse_header(pkg, line):
    annos, s = take_annotations(line.rstrip("{").strip())
    mods = []
    while True:
        w, rest = (s.split(" ", 1) + [""])[:2]
        if w in MODS:
            mods.append(w)
            s = rest
        else:
            break
    kind, s = s.split(" ", 1)
    m = re.match(r"([\w.$]+)", s)
    name, s = m.group(1), s[m.end():]
    tparams, tnames, s = type_params(strip_annotations(s))
    extends, implements = None, []
    words = s.strip()
    if words.startswith("extends "):
        words = words[len("extends "):]
        if kind == "interface":  # interfaces: `extends A B`
            implements, words = _type_list(words, stop="implements")
        else:
            extends, words = take_type(words)
    if words.startswith("implements "):
        implements, words = _type_list(words[len("implements "):])
    return Cls(pkg, name, kind, mods, annos, tparams, tnames, extends, implements)


def _type_list(s, stop=None):
    out = []
    while s and not (stop and s.startswith(stop + " ")):
        t, s = take_type(s)
        out.append(t)
    return out, s


def parse_params(s):
    out = []
    for p in split_top(s):
        annos, p = take_annotations(p)
        t, rest = take_type(strip_annotations(p))
        out.append((annos, t))  # a parameter name (format 3.0) is dropped: the stub names its own
    return out


def parse_member(kind, line, cls):
    s = line.rstrip()
    comment = s.find(" // ")
    if kind == "field" and comment >= 0:
        s = s[:comment]
    s = s.rstrip(";")
    annos, s = take_annotations(s)
    mods = []
    while True:
        w, rest = (s.split(" ", 1) + [""])[:2]
        if w in MODS or w in ("synchronized", "native"):
            if w in MODS:
                mods.append(w)
            s = rest
        else:
            break
    d = {"annos": annos, "mods": mods}
    if kind in ("field", "enum_constant"):
        value = None
        if " = " in s:
            s, value = s.split(" = ", 1)
        t, name = take_type(strip_annotations(s))
        d.update(type=t, name=name.strip(), value=value)
        return d
    tparams, tnames, s = type_params(s) if kind == "method" else ("", [], s)
    if kind == "method":
        ret, s = take_type(strip_annotations(s))
    else:
        ret = None
    open_, close = s.index("("), s.rindex(")")
    name, params, tail = s[:open_].strip(), parse_params(s[open_ + 1:close]), s[close + 1:].strip()
    throws, default = [], None
    if tail.startswith("throws "):
        tail = tail[len("throws "):]
        rest = tail.split(" default ", 1)
        throws = [t.strip() for t in rest[0].split(",")]
        tail = "default " + rest[1] if len(rest) > 1 else ""
    if tail.startswith("default "):
        default = tail[len("default "):]
    d.update(tparams=tparams, tnames=tnames, ret=ret, name=name, params=params, throws=throws, default=default)
    return d


def parse(path):
    classes, pkg, cur = {}, None, None
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith("//"):
                continue
            if line.startswith("package ") and line.endswith("{"):
                pkg = line[len("package "):-1].strip()
            elif line == "}":
                if cur is not None:
                    cur = None
                else:
                    pkg = None
            elif line.endswith("{"):
                cur = parse_header(pkg, line)
                classes[cur.fqn] = cur
            else:
                kind, rest = line.split(" ", 1)
                if kind in ("ctor", "method", "field", "enum_constant"):
                    cur.members.append((kind, parse_member(kind, rest, cur)))
                # `property` (Kotlin properties) and anything else: not needed for Java stubs
    return classes


def type_names(t):
    """The dotted names a type string mentions (type arguments included), without primitives and wildcards."""
    return [n for n in IDENT.findall(t) if n not in KEYWORDS]


def qualify(t, tvars):
    """Bare names are java.lang types (format 2.0 drops that prefix); spell them out, a stub package may shadow them."""
    return IDENT.sub(lambda m: m.group(0) if ("." in m.group(0) or m.group(0) in KEYWORDS or m.group(0) in tvars)
                     else "java.lang." + m.group(0), t)


def prune(classes, jdk):
    """Drop what does not resolve (see the module doc), until nothing changes. Returns the count dropped."""
    dropped = 0

    def known(t, tvars):
        for n in type_names(t):
            if n in tvars:
                continue
            q = n if "." in n else "java.lang." + n
            if q not in classes and q not in jdk:
                return False
        return True

    def scope(c):
        tv, o = set(c.tnames), c
        while o.outer and o.outer in classes:
            o = classes[o.outer]
            tv |= set(o.tnames)
        return tv

    changed = True
    while changed:
        changed = False
        for fqn in list(classes):
            c = classes.get(fqn)
            if c is None:
                continue
            tv = scope(c)
            if (c.outer and c.outer not in classes) or (c.extends and not known(c.extends, tv)) or not known(c.tparams, tv):
                del classes[fqn]
                dropped += 1
                changed = True
                continue
            keep = [i for i in c.implements if known(i, tv)]
            if len(keep) != len(c.implements):
                c.implements, changed = keep, True
    for c in classes.values():
        tv = scope(c)
        members = []
        for kind, d in c.members:
            mtv = tv | set(d.get("tnames", ()))
            texts = [d.get("type") or "", d.get("ret") or "", d.get("tparams") or ""] + [p[1] for p in d.get("params", ())]
            if all(known(t, mtv) for t in texts):
                d["throws"] = [t for t in d.get("throws", ()) if known(t, mtv)]
                members.append((kind, d))
            else:
                dropped += 1
        c.members = members
    return dropped


def jdk_ctor_args(names):
    """For JDK classes that stubs extend: the arguments of a constructor a subclass can call ('' for a no-arg one)."""
    if not names:
        return {}
    out = subprocess.run(["javap", "-protected"] + sorted(names), capture_output=True, text=True, check=True).stdout
    ctors, cur = {}, None
    for line in out.splitlines():
        m = re.match(r"(?:public |protected |abstract |final |static )*(?:class|interface) ([\w.$]+)", line)
        if m:
            cur = m.group(1).replace("$", ".")
            continue
        m = re.match(r"\s+(?:public|protected) ([\w.$]+)\((.*)\);", line)  # one that throws nothing
        if m and cur and m.group(1).replace("$", ".") == cur:
            params = [p.strip() for p in split_top(m.group(2))] if m.group(2).strip() else []
            ctors.setdefault(cur, []).append(params)
    args = {}
    for n in names:
        best = min(ctors.get(n, [[]]), key=len)
        args[n] = ", ".join(zero(t) if t in PRIMS else f"({t}) null" for t in best)
    return args


def supertypes(c, classes, subst):
    """(stub class, {its type variable: the type it stands for here}) for every stub supertype of c, nearest first."""
    out = []
    for t in ([c.extends] if c.extends else []) + c.implements:
        base = t.split("<")[0]
        sup = classes.get(base)
        if sup is None:
            continue
        args = split_top(t[t.index("<") + 1:t.rindex(">")]) if "<" in t else []
        m = {v: _subst(a, subst) for v, a in zip(sup.tnames, args)}
        out.append((sup, m))
        out.extend(supertypes(sup, classes, m))
    return out


def _subst(t, m):
    return IDENT.sub(lambda x: m.get(x.group(0), x.group(0)), t) if m else t


def add_inherited_abstracts(classes):
    """The signature file leaves out a method that only overrides one of a supertype (metalava drops overrides that
    change nothing visible), also where the supertype's is abstract: a concrete stub class would not compile. Such
    methods are declared in the concrete class again, with the supertype's signature (type variables substituted);
    matched by name and parameter count, which is enough here."""
    for c in classes.values():
        if c.kind != "class" or "abstract" in c.mods:
            continue
        chain = supertypes(c, classes, {})
        state = {}  # (name, arity) -> None when implemented, else (declaration, substitution) still owed
        for cls, m in [(c, {})] + [x for x in chain if x[0].kind == "class"]:  # superclasses, nearest first
            for k, d in cls.members:
                key = (d.get("name"), len(d.get("params", ())))
                if k == "method" and "static" not in d["mods"] and key not in state:
                    state[key] = (d, m) if "abstract" in d["mods"] else None
        for sup, m in chain:
            if sup.kind != "interface":
                continue
            for k, d in sup.members:
                key = (d.get("name"), len(d.get("params", ())))
                if k == "method" and not {"static", "default"} & set(d["mods"]) and key not in state:
                    state[key] = (d, m)
        for d, m in filter(None, state.values()):
            nd = dict(d)
            nd["mods"] = [x for x in d["mods"] if x != "abstract"]
            nd["ret"] = _subst(d["ret"], m)
            nd["params"] = [(a, _subst(t, m)) for a, t in d["params"]]
            nd["throws"] = [_subst(t, m) for t in d["throws"]]
            c.members.append(("method", nd))


def zero(t):
    if t == "boolean":
        return "false"
    if t in PRIMS:
        return f"({t}) 0"
    return "null"


def nonconst(t):
    """A non-constant initializer for a final field with no constant value in the API."""
    if t == "boolean":
        return f"{HELPER}.Marker.z()"
    if t in PRIMS:
        return f"({t}) {HELPER}.Marker.i()"
    return f"{HELPER}.Marker.o()"


def emit(c, classes, children, jdk_args, out, indent):
    p = " " * indent
    tv = set(c.tnames)
    o = c
    while o.outer:
        o = classes[o.outer]
        tv |= set(o.tnames)
    simple = c.name.rsplit(".", 1)[-1]
    kind = c.kind
    mods = [m for m in c.mods if m != "sealed"]
    if kind in ("interface", "@interface", "enum"):
        mods = [m for m in mods if m not in ("abstract", "final")]
    head = " ".join(c.annos + mods + [kind, simple]) + c.tparams
    if c.extends and kind == "class":
        head += " extends " + qualify(c.extends, tv)
    if c.implements:
        head += (" extends " if kind == "interface" else " implements ") + ", ".join(qualify(i, tv) for i in c.implements)
    out.append(f"{p}{head} {{")
    if kind == "enum":
        consts = [d["name"] for k, d in c.members if k == "enum_constant"]
        out.append(f"{p}  {', '.join(consts)};")
    stub = 'throw new RuntimeException("Stub!");'
    base = c.extends.split("<")[0] if c.extends else None
    if base in classes:
        call_super = f"super(({HELPER}.Marker) null); "
    elif base and jdk_args.get(base):
        call_super = f"super({jdk_args[base]}); "
    else:
        call_super = ""
    if kind == "class":
        out.append(f"{p}  protected {simple}({HELPER}.Marker m) {{ {call_super}}}")
    seen = set()
    for k, d in c.members:
        if k == "enum_constant":
            continue
        mtv = tv | set(d.get("tnames", ()))
        annos = " ".join(d["annos"] + [""])
        if k == "field":
            t = qualify(d["type"], mtv)
            mods = d["mods"]
            if kind in ("interface", "@interface"):
                val = d["value"] if d["value"] is not None else nonconst(d["type"])
                out.append(f"{p}  {annos}{' '.join(mods)} {t} {d['name']} = {val};")
            elif "final" in mods:
                val = d["value"] if d["value"] is not None else nonconst(d["type"])
                out.append(f"{p}  {annos}{' '.join(mods)} {t} {d['name']} = {val};")
            else:
                out.append(f"{p}  {annos}{' '.join(mods)} {t} {d['name']};")
            continue
        if kind == "enum" and d["name"] in ("values", "valueOf") and "static" in d["mods"]:
            continue
        params = ", ".join(f"{' '.join(a + [''])}{qualify(t, mtv)} p{i}" for i, (a, t) in enumerate(d["params"]))
        sig = (d["name"], tuple(re.sub(r"<.*>", "", t) for _, t in d["params"]))
        if sig in seen:
            continue
        seen.add(sig)
        throws = (" throws " + ", ".join(qualify(t, mtv) for t in d["throws"])) if d["throws"] else ""
        if k == "ctor":
            if kind == "enum":
                continue
            out.append(f"{p}  {annos}{' '.join(d['mods'])} {simple}({params}){throws} {{ {call_super}{stub} }}")
            continue
        mods = list(d["mods"])
        abstract = "abstract" in mods or (kind in ("interface", "@interface") and not ({"default", "static"} & set(mods)))
        if kind != "class" and kind != "enum":
            mods = [m for m in mods if m != "final"]
        head = " ".join(x for x in [annos.strip(), " ".join(mods), d["tparams"], qualify(d["ret"], mtv), d["name"]] if x)
        if abstract:
            default = f" default {d['default']}" if d["default"] is not None else ""
            out.append(f"{p}  {head}({params}){throws}{default};")
        else:
            out.append(f"{p}  {head}({params}){throws} {{ {stub} }}")
    for ch in children.get(c.fqn, ()):
        emit(ch, classes, children, jdk_args, out, indent + 2)
    out.append(f"{p}}}")


def main(api, jdk_list, out_dir):
    with open(jdk_list, encoding="utf-8") as f:
        jdk = {line.strip() for line in f if line.strip()}
    jdk_pkgs = {n.rsplit(".", 1)[0] for n in jdk}
    classes = {k: v for k, v in parse(api).items() if v.pkg not in jdk_pkgs}
    total = len(classes)
    dropped = prune(classes, jdk)
    add_inherited_abstracts(classes)
    jdk_args = jdk_ctor_args({c.extends.split("<")[0] for c in classes.values()
                              if c.kind == "class" and c.extends and c.extends.split("<")[0] not in classes})
    children = {}
    for c in classes.values():
        if c.outer:
            children.setdefault(c.outer, []).append(c)
    files = 0
    for c in classes.values():
        if c.outer:
            continue
        out = [f"package {c.pkg};", ""]
        emit(c, classes, children, jdk_args, out, 0)
        d = os.path.join(out_dir, *c.pkg.split("."))
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, c.name + ".java"), "w", encoding="utf-8") as f:
            f.write("\n".join(out) + "\n")
        files += 1
    helper = os.path.join(out_dir, *HELPER.split("."))
    os.makedirs(helper, exist_ok=True)
    with open(os.path.join(helper, "Marker.java"), "w", encoding="utf-8") as f:
        f.write(f"package {HELPER};\n\n/** Not Android API: lets stub constructors reach a superclass constructor. */\n"
                "public final class Marker {\n  private Marker() {}\n"
                "  public static boolean z() { return false; }\n  public static int i() { return 0; }\n"
                "  public static <T> T o() { return null; }\n}\n")
    ann = os.path.join(out_dir, "androidx", "annotation")
    os.makedirs(ann, exist_ok=True)
    for name in ("RecentlyNonNull", "RecentlyNullable"):
        with open(os.path.join(ann, name + ".java"), "w", encoding="utf-8") as f:
            f.write("package androidx.annotation;\n\n"
                    "@java.lang.annotation.Retention(java.lang.annotation.RetentionPolicy.CLASS)\n"
                    "@java.lang.annotation.Target({java.lang.annotation.ElementType.METHOD, "
                    "java.lang.annotation.ElementType.PARAMETER, java.lang.annotation.ElementType.FIELD})\n"
                    f"public @interface {name} {{}}\n")
    print(f"stubgen: {total} classes in the API outside the JDK's packages, {len(classes)} kept, "
          f"{dropped} classes or members dropped as unresolvable, {files} files", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
