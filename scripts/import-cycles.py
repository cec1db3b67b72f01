#!/usr/bin/env python3
"""Module dependency graph of a Rust crate's src/ (one node per file) and its cycles.

    python3 scripts/import-cycles.py DIR [--layers]

Exits 1 when a module imports one that imports it back (directly or through others), 0 when
there is no cycle; .ci/run runs it on src, gateway/src and loadtest/src. With --layers it also
checks the imports against the layer list in the crate doc's ```text block (one layer per line,
top first), as loadtest/src/main.rs declares it.

Edges: `use crate::..`, `use super::..`, `use self::..`, inline `crate::x::` / `super::x` /
`self::x` paths, and `child::` paths to modules declared with `mod child;` in the file. Each path
resolves to the longest module prefix that is a file. `super` inside an inline `mod tests {` is
the file's own module (no edge). `mod x;` declarations alone are not edges.
"""
import os
import re
import sys

args = [a for a in sys.argv[1:] if a != "--layers"]
root = args[0] if args else "src"

files = {}  # module path tuple -> file
for dirpath, _, names in os.walk(root):
    for n in names:
        if not n.endswith(".rs"):
            continue
        full = os.path.join(dirpath, n)
        rel = os.path.relpath(full, root)[:-3].split(os.sep)
        if rel in (["main"], ["lib"]):
            mod = ()
        elif rel[-1] == "mod":
            mod = tuple(rel[:-1])
        else:
            mod = tuple(rel)
        files[mod] = full


def name(mod):
    return "main" if mod == () else "/".join(mod)


def expand(path):
    """`a::{b, c::{d, e}}` -> ['a::b', 'a::c::d', 'a::c::e'] (no spaces)."""
    m = re.search(r"\{", path)
    if not m:
        return [path]
    prefix = path[: m.start()]
    depth, i = 0, m.start()
    for i in range(m.start(), len(path)):
        if path[i] == "{":
            depth += 1
        elif path[i] == "}":
            depth -= 1
            if depth == 0:
                break
    inner, rest = path[m.start() + 1 : i], path[i + 1 :]
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    out = []
    for p in parts:
        p = p.strip()
        if not p:
            continue
        full = prefix + p + rest if p != "self" else prefix.rstrip(":") + rest
        out.extend(expand(full))
    return out


def resolve(base, segs):
    """Longest prefix of base+segs that is a module file."""
    best = None
    mod = tuple(base)
    if mod in files:
        best = mod
    for s in segs:
        s = s.split(" as ")[0].strip()
        mod = mod + (s,)
        if mod in files:
            best = mod
        else:
            break
    return best


edges = {m: set() for m in files}
for mod, path in files.items():
    text = open(path).read()
    # Cut at the first inline module (`mod tests {`): super there means this file.
    inline = re.search(r"^\s*(pub(\(\w+\))?\s+)?mod\s+\w+\s*\{", text, re.M)
    body = text[: inline.start()] if inline else text
    body = re.sub(r"//[^\n]*", "", body)  # comments (doc comments name modules too)
    children = set(re.findall(r"^\s*(?:pub(?:\([\w:]+\))?\s+)?mod\s+(\w+)\s*;", body, re.M))
    # The module a file is in (for super): a mod.rs/main.rs file is its own dir's module.
    parent = mod[:-1]
    paths = []
    for stmt in re.findall(r"\buse\s+([^;]+);", body, re.S):
        stmt = re.sub(r"\s+as\s+", "@AS@", stmt)
        paths.extend(expand(re.sub(r"\s+", "", stmt).replace("@AS@", " as ")))
    for m in re.finditer(r"(?<![\w:])((?:crate|super|self)(?:::\w+)+)", body):
        paths.append(m.group(1))
    for c in children:
        for m in re.finditer(r"(?<![\w:])(%s(?:::\w+)+)" % c, body):
            paths.append("self::" + m.group(1))
    for p in paths:
        segs = p.split("::")
        head = segs[0]
        if head == "crate":
            target = resolve((), segs[1:])
        elif head == "super":
            base = parent
            segs = segs[1:]
            while segs and segs[0] == "super":
                base = base[:-1]
                segs = segs[1:]
            target = resolve(base, segs)
        elif head == "self":
            target = resolve(mod, segs[1:])
        else:
            continue
        if target is not None and target != mod:
            edges[mod].add(target)

print("module: imports")
for m in sorted(edges, key=name):
    print(f"  {name(m)}: {', '.join(sorted(name(t) for t in edges[m])) or '-'}")

# Tarjan's strongly connected components.
index, low, on, stack, sccs, counter = {}, {}, set(), [], [], [0]


def strong(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges[v]:
        if w not in index:
            strong(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        sccs.append(comp)


sys.setrecursionlimit(10000)
for v in edges:
    if v not in index:
        strong(v)
cycles = [c for c in sccs if len(c) > 1]


def check_layers():
    """The ```text block of the crate doc: one layer per line, names before a run of 2+ spaces."""
    top = files.get(())
    doc = [l[4:] if l.startswith("//! ") else l[3:] for l in open(top) if l.startswith("//!")]
    try:
        a = doc.index("```text\n")
        b = doc.index("```\n", a + 1)
    except ValueError:
        print("no ```text layer block in the crate doc")
        return
    level = {}
    lines = doc[a + 1 : b]
    for i, line in enumerate(lines):
        names = re.split(r"\s{2,}", line.strip())[0]
        m = re.match(r"^(.*)\{(.*)\}$", names)
        parts = [m.group(1) + x.strip() for x in m.group(2).split(",")] if m else names.split(",")
        for n in parts:
            n = n.strip()
            mod = () if n == "main" else tuple(n.split("/"))
            if mod not in files:
                print(f"layer line {i + 1}: {n} is no module file")
            level[mod] = len(lines) - i
    bad = 0
    for m in files:
        if m not in level:
            print(f"{name(m)} is on no layer line")
            bad += 1
    for m, ts in edges.items():
        for t in ts:
            if m in level and t in level and level[t] >= level[m]:
                print(f"layer violation: {name(m)} (line {len(lines) - level[m] + 1}) imports "
                      f"{name(t)} (line {len(lines) - level[t] + 1})")
                bad += 1
    print(f"declared layering ({len(lines)} lines): " + ("respected by every edge" if not bad else f"{bad} problems"))


if "--layers" in sys.argv:
    check_layers()
if not cycles:
    # Layers: longest path to a leaf.
    depth = {}

    def d(v):
        if v not in depth:
            depth[v] = 1 + max((d(w) for w in edges[v]), default=-1)
        return depth[v]

    for v in edges:
        d(v)
    print("no cycle; layers (longest path down to a leaf):")
    for k in sorted(set(depth.values()), reverse=True):
        print(f"  {k}: {', '.join(sorted(name(v) for v in edges if depth[v] == k))}")
    sys.exit(0)
for c in cycles:
    print(f"CYCLE of {len(c)} modules: {', '.join(sorted(name(v) for v in c))}")
    # One concrete circle through the component, for the report.
    comp = set(c)
    start = sorted(c, key=name)[0]
    path, seen = [start], {start}
    while True:
        nxt = sorted((w for w in edges[path[-1]] if w in comp), key=name)
        back = [w for w in nxt if w == start]
        fresh = [w for w in nxt if w not in seen]
        if fresh:
            path.append(fresh[0])
            seen.add(fresh[0])
        elif back or not nxt:
            break
        else:
            break
    print("  e.g. " + " -> ".join(name(v) for v in path) + (" -> " + name(start) if start in edges[path[-1]] else ""))
sys.exit(1)
