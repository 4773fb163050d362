#!/usr/bin/env python3
"""Fails when a crate's modules import each other in a circle.

Each `.rs` file under a crate's `src/` is one module (`src/a/mod.rs` and `src/a.rs` are `a`,
`src/a/b.rs` is `a::b`). A module depends on every module it names through `crate::` (in `use`
lines and in code alike) and through `super::`; comments and `mod tests` blocks do not count.
A circle of two or more modules is printed, and the exit status is 1.

    .ci/import-cycles.py [CRATE_DIR ...]     (default: every crate under guest/ and host/)
"""

import pathlib
import re
import sys

TOP = pathlib.Path(__file__).resolve().parent.parent
PATH = re.compile(r"\b(crate|super)((?:::\w+)+)")
# `use crate::{a, b::C}` and `use super::{x, y}`: each name inside the braces.
GROUP = re.compile(r"\b(crate|super)::\{([^}]*)\}")
TEST_MODULE = re.compile(r"^\s*mod tests\s*\{")


def module_of(src: pathlib.Path, file: pathlib.Path) -> tuple:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return tuple(parts)


def code_lines(text: str):
    """The file's lines without comments, and without its `mod tests { ... }` block."""
    depth_in_tests = None
    depth = 0
    for line in text.splitlines():
        code = line.split("//", 1)[0] if "//" in line and '"' not in line.split("//", 1)[0] else line
        if code.lstrip().startswith("//"):
            code = ""
        if depth_in_tests is None and TEST_MODULE.match(code):
            depth_in_tests = depth
        depth += code.count("{") - code.count("}")
        if depth_in_tests is not None:
            if depth <= depth_in_tests:
                depth_in_tests = None
            continue
        yield code


def resolve(modules: set, base: tuple, names: list) -> tuple:
    """The longest known module along `base` + `names`."""
    path = list(base)
    found = tuple(base)
    for name in names:
        path.append(name)
        if tuple(path) in modules:
            found = tuple(path)
        else:
            break
    return found


def dependencies(src: pathlib.Path):
    files = {module_of(src, f): f for f in sorted(src.rglob("*.rs"))}
    modules = set(files)
    graph = {}
    for module, file in files.items():
        is_dir_module = file.name in ("mod.rs", "lib.rs", "main.rs")
        parent = module if is_dir_module else module[:-1]
        # `super` in `a/b.rs` is `a`; in `a/mod.rs` it is the crate root.
        outer = parent[:-1] if is_dir_module else parent
        deps = set()
        for code in code_lines(file.read_text()):
            uses = []
            for root, inner in GROUP.findall(code):
                for item in inner.split(","):
                    names = [n for n in item.strip().split(" as ")[0].split("::") if n]
                    uses.append((root, names))
            for root, rest in PATH.findall(GROUP.sub("", code)):
                uses.append((root, [n for n in rest.split("::") if n]))
            for root, names in uses:
                if root == "crate":
                    base = ()
                else:
                    base = outer if is_dir_module else parent
                    while names and names[0] == "super":
                        base, names = base[:-1], names[1:]
                target = resolve(modules, base, names)
                if target != module:
                    deps.add(target)
        graph[module] = deps
    return graph


def cycles(graph: dict):
    """Strongly connected components of two or more modules (Tarjan)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return found


def name(module: tuple) -> str:
    return "::".join(module) or "crate"


def main(argv):
    crates = [pathlib.Path(a) for a in argv] or sorted(
        p.parent for p in TOP.glob("*/*/Cargo.toml") if (p.parent / "src").is_dir()
    )
    failed = False
    for crate in crates:
        graph = dependencies(crate / "src")
        # The crate root declares every module; a module naming `crate::x` does not import it.
        graph.pop((), None)
        for deps in graph.values():
            deps.discard(())
        for component in cycles(graph):
            failed = True
            members = sorted(component)
            print(f"{crate.relative_to(TOP) if crate.is_absolute() else crate}: modules import "
                  f"each other in a circle: {', '.join(name(m) for m in members)}")
            for m in members:
                inside = sorted(name(d) for d in graph[m] if d in component)
                print(f"  {name(m)} imports {', '.join(inside)}")
    if not failed:
        print(f"no import circles in {len(crates)} crates")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
