"""The package's shape: imports flow one way, files stay short, the core names no technique.

Read from the source with `ast` and regular expressions, nothing imported but the
regularizer registry (for the names the core must not use).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ganrun"
MAX_LINES = 400
# The sub-packages that name no technique. callbacks/faults.py (failures made on purpose,
# test tooling) names none either and is checked with them.
CORE = ("training", "callbacks", "cli")


def modules_under(package: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module of `package` (a package's __init__.py is
    the package: ganrun/cli/__init__.py -> ganrun.cli, ganrun/cli/train.py -> ganrun.cli.train)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports_of(module: str, modules: dict[str, Path]) -> dict[str, int]:
    """The package's modules `module` imports, at module level or in a function, each
    with the line of its first import. `import_all(__name__)` (ganrun.registry) in a
    package imports each of the package's modules."""
    root, path = module.split(".")[0], modules[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def known(name: str) -> str | None:  # the module, else the module it is an attribute of
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from ganrun.a import b`: the submodule ganrun.a.b where b is one, else ganrun.a
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        elif (isinstance(node, ast.Call) and path.name == "__init__.py"
              and getattr(node.func, "id", getattr(node.func, "attr", None)) == "import_all"
              and [getattr(arg, "id", None) for arg in node.args] == ["__name__"]):
            targets = [m for m in modules if m.rpartition(".")[0] == module]
        else:
            continue
        for target in targets:
            ours = target == root or target.startswith(f"{root}.")
            imported = known(target) if ours else None
            if imported and imported != module:
                found.setdefault(imported, node.lineno)
    return found


MODULES = modules_under(PACKAGE)
GRAPH = {module: imports_of(module, MODULES) for module in MODULES}


def room_of(module: str) -> str:
    """ganrun.cli.train -> ganrun.cli; a top-level module is a room of its own."""
    return ".".join(module.split(".")[:2])


def cycles(graph: dict[str, set[str] | dict[str, int]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one node (Tarjan),
    as a path that returns to its first node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(node: str) -> None:  # recursion is fine: ~80 modules
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_within(graph, component) for component in components]


def _cycle_within(graph, component: set[str]) -> list[str]:
    """A shortest path from the component's first node back to itself (breadth first)."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node]):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt in component and nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def _where(source: str, target: str) -> str:
    """file:line of an import of `target` in `source` (the first)."""
    path = MODULES[source].relative_to(PACKAGE.parent)
    return f"{path}:{GRAPH[source][target]}"


def test_modules_import_each_other_in_no_circle():
    found = cycles(GRAPH)
    lines = [" -> ".join(cycle) + "\n      " + ", ".join(
        _where(a, b) for a, b in zip(cycle, cycle[1:], strict=False)) for cycle in found]
    assert not found, "import circles between modules:\n  " + "\n  ".join(lines)


def test_rooms_import_each_other_in_no_circle():
    """Sub-packages (ganrun.cli, ganrun.training, ...) and top-level modules as rooms:
    imports between rooms flow one way."""
    rooms: dict[str, dict[str, list[str]]] = {}
    for source, targets in GRAPH.items():
        for target in targets:
            if room_of(source) != room_of(target):
                rooms.setdefault(room_of(source), {}).setdefault(room_of(target), []).append(
                    _where(source, target))
    for room in {room_of(m) for m in MODULES}:
        rooms.setdefault(room, {})
    found = cycles(rooms)
    lines = []
    for cycle in found:
        steps = [f"{a} -> {b} ({', '.join(rooms[a][b])})"
                 for a, b in zip(cycle, cycle[1:], strict=False)]
        lines.append(" -> ".join(cycle) + "\n      " + "\n      ".join(steps))
    assert not found, "import circles between sub-packages:\n  " + "\n  ".join(lines)


def test_the_graph_reads_every_kind_of_import(tmp_path):
    """`from pkg.a import b` reaches the submodule b, else pkg.a; a function's own imports
    count; an attribute import reaches its module; relative imports; import_all."""
    package = tmp_path / "pkg"
    files = {"__init__.py": "",
             "a/__init__.py": "from pkg.registry import import_all\nimport_all(__name__)\n",
             "a/b.py": "from pkg.a import c\nfrom pkg import top\n",
             "a/c.py": "def f():\n    import pkg.top.name\n    from . import b\n",
             "a/d.py": "from pkg.a import helper\nfrom ..top import x\nimport os\n",
             "registry.py": "", "top.py": "import pkg.a.b as alias\n"}
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    modules = modules_under(package)
    graph = {module: set(imports_of(module, modules)) for module in modules}
    assert graph == {"pkg": set(), "pkg.registry": set(), "pkg.top": {"pkg.a.b"},
                     "pkg.a": {"pkg.registry", "pkg.a.b", "pkg.a.c", "pkg.a.d"},
                     "pkg.a.b": {"pkg.a.c", "pkg.top"}, "pkg.a.c": {"pkg.top", "pkg.a.b"},
                     "pkg.a.d": {"pkg.a", "pkg.top"}}
    assert sorted(cycles(graph)) == [["pkg.a", "pkg.a.d", "pkg.a"],  # via import_all
                                     ["pkg.a.b", "pkg.a.c", "pkg.a.b"]]  # pkg.top too
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert "ganrun.training.run" in GRAPH["ganrun.cli.train"]  # inside main()


def test_no_file_is_over_400_lines():
    long = {str(path.relative_to(PACKAGE.parent)): n for path in MODULES.values()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines: " + ", ".join(
        f"{path} ({n})" for path, n in sorted(long.items()))


# --- the core names no technique -----------------------------------------------------------

PARTS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")  # DynGAN -> Dyn, GAN; G_ema -> G, ema
TOKENS = re.compile(r"[A-Za-z0-9_]+")
STR_METHODS = re.compile(r"\.r?partition\(")  # "key=value".partition("="): not DynGAN's


def technique_words() -> dict[str, str]:
    """Normalised (lower case, no separators) -> as written: every registered
    regularizer's name and class name, and the words of DynGAN's partitioning."""
    from ganrun.regularizers import REGULARIZERS

    words = {}
    for name, cls in REGULARIZERS.items():
        words[name.replace("_", "")] = name
        words[cls.__name__.lower()] = cls.__name__
    for word in ("partition", "partitions", "partitioned", "partitioner", "partitioners"):
        words[word] = word
    return words


def _prose(words: dict[str, str]) -> list[tuple[re.Pattern, str]]:
    """Names of several words also as prose: "spectral norm", "label-smoothing"."""
    return [(re.compile(r"(?<![A-Za-z0-9])" + r"[\s-]+".join(name.split("_")) + r"(?![A-Za-z0-9])",
                        re.IGNORECASE), name) for name in words.values() if "_" in name]


def technique_hits(line: str, words: dict[str, str], prose) -> list[str]:
    """The technique names `line` holds: a whole identifier, or consecutive parts of one
    (G_ema, PacGANLabeller, self.dyngan_state), or prose; not `schema`, `remains`."""
    line = STR_METHODS.sub("(", line)
    hits = []
    for token in TOKENS.findall(line):
        parts = [p.lower() for piece in token.split("_") for p in PARTS.findall(piece)]
        for i in range(len(parts)):
            for j in range(i + 1, len(parts) + 1):
                if "".join(parts[i:j]) in words:
                    hits.append(words["".join(parts[i:j])])
    hits += [name for pattern, name in prose if pattern.search(line)]
    return sorted(set(hits))


def test_the_word_matcher():
    words = {"ema": "ema", "dyngan": "dyngan", "pacgan": "PacGAN", "spectralnorm": "spectral_norm",
             "r1": "r1", "partitioner": "partitioner"}
    prose = _prose(words)
    assert technique_hits("self.G_ema = copy(G)", words, prose) == ["ema"]
    assert technique_hits("EMA(decay=0.999)", words, prose) == ["ema"]
    assert technique_hits("class PacGANLabeller:", words, prose) == ["PacGAN"]
    assert technique_hits("DynGAN's detector; module.partitioner", words, prose) == [
        "dyngan", "partitioner"]
    assert technique_hits("SpectralNorm, or spectral norm", words, prose) == ["spectral_norm"]
    assert technique_hits("R1Penalty", words, prose) == ["r1"]
    assert technique_hits("schema remains; emails, system, dynamic", words, prose) == []
    assert technique_hits('key, _, value = arg.partition("=")', words, prose) == []


def test_the_core_names_no_technique():
    """ganrun/training, ganrun/callbacks and ganrun/cli ask components for traits; they
    name no regularizer (a new technique is one file and one YAML, the core unchanged)."""
    words = technique_words()
    prose = _prose(words)
    hits = []
    for room in CORE:
        for path in sorted((PACKAGE / room).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                hits += [f"{path.relative_to(PACKAGE.parent)}:{number}: {word}"
                         for word in technique_hits(line, words, prose)]
    assert not hits, f"the core names {len(hits)} techniques:\n  " + "\n  ".join(hits)
