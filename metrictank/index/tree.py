"""The Graphite path tree of one org: nested dicts of path components.

Memory and GC cost drive the shape. There are as many leaves as series, so a leaf costs one dict slot
in its parent whose value is the row itself (an int, or a tuple of rows when several series share a
path, e.g. after an interval change) - no per-leaf object. A branch is its bare children dict; only a
path that is both a series and a branch gets a `Branch` object holding its rows. A dict holding only
str -> int is untracked by the cyclic GC, so the million leaves cost full collections nothing; only
the dicts of inner levels are traversed. Component strings are interned so that a component repeated
under every host ("cpu", "load") is stored once.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

from metrictank.index import _tree
from metrictank.index.glob import Matcher, compile_path

Rows = int | tuple[int, ...]


class Branch:
    """A path that is a series (rows) and also has children."""

    __slots__ = ("children", "rows")

    def __init__(self, rows: Rows | None, children: dict | None = None) -> None:
        self.children: dict = {} if children is None else children
        self.rows = rows


def add_row(rows: Rows | None, row: int) -> Rows:
    """Rows of a path kept sorted, so a path's rows do not depend on the order series were added in."""
    if rows is None:
        return row
    if isinstance(rows, int):
        return rows if rows == row else ((rows, row) if rows < row else (row, rows))
    return rows if row in rows else tuple(sorted((*rows, row)))


def del_row(rows: Rows | None, row: int) -> Rows | None:
    if rows is None or rows == row:
        return None
    if isinstance(rows, int):
        return rows
    left = tuple(r for r in rows if r != row)
    return left[0] if len(left) == 1 else (left or None)


def rows_tuple(rows: Rows | None) -> tuple[int, ...]:
    if rows is None:
        return ()
    return (rows,) if isinstance(rows, int) else rows


def node_info(v: object) -> tuple[bool, bool, tuple[int, ...]]:
    """(leaf, has_children, rows) of a child slot value."""
    cls = v.__class__
    if cls is dict:
        return False, True, ()
    if cls is Branch:
        return v.rows is not None, bool(v.children), rows_tuple(v.rows)  # type: ignore[attr-defined]
    return True, False, rows_tuple(v)  # type: ignore[arg-type]


class Tree:
    """Path components of one org's untagged series."""

    __slots__ = ("root", "leaves")

    def __init__(self) -> None:
        self.root: dict = {}
        self.leaves = 0  # number of (path, row) pairs

    def __bool__(self) -> bool:
        return self.leaves > 0

    def add(self, path: str, row: int) -> None:
        *dirs, last = path.split(".")
        ch = self._walk(dirs)
        child = ch.get(last)
        cls = child.__class__
        if child is None:
            ch[sys.intern(last)] = row
        elif cls is dict:  # a branch becomes a series too
            ch[last] = Branch(row, child)
        elif cls is Branch:
            child.rows = add_row(child.rows, row)
        else:
            ch[last] = add_row(child, row)
        self.leaves += 1

    def _dir(self, dirs: str) -> dict:
        """The children dict of the branch at `dirs` (dot-separated), created as `add` would."""
        return self._walk(dirs.split("."))

    def _walk(self, comps: list[str]) -> dict:
        """The children dict of the branch at these path components, creating branches on the way."""
        intern = sys.intern
        ch = self.root
        for comp in comps:
            child = ch.get(comp)
            cls = child.__class__
            if child is None:
                child = ch[intern(comp)] = {}
            elif cls is Branch:
                child = child.children
            elif cls is not dict:  # a leaf gains children
                b = ch[comp] = Branch(child)
                child = b.children
            ch = child
        return ch

    def add_many(self, paths: list[str], rows: list[int]) -> None:
        """`add` for a batch (e.g. the new series of one ingest batch), with the same resulting tree.

        New leaves (the common case) are set in C (`_tree.add_new`): series arrive grouped by parent (a host's
        metrics, a counter's siblings), so the parent branch is looked up once per run of paths that share it,
        and a path costs a few dict operations without interpreter work. Paths whose leaf exists already (a
        second row, a branch that becomes a series) are applied afterwards by `add`, in order; a branch's
        children dict is never replaced while adding, so holding on to it is safe."""
        paths = paths if paths.__class__ is list else list(paths)
        rows = rows if rows.__class__ is list else list(rows)
        added, deferred = _tree.add_new(self.root, self._dir, paths, rows)
        self.leaves += added
        for i in deferred:
            self.add(paths[i], rows[i])

    def remove(self, path: str, row: int) -> bool:
        """Drop `row` at `path`, then every branch left without children or rows."""
        *dirs, last = path.split(".")
        trail: list[tuple[dict, str]] = []
        ch = self.root
        for comp in dirs:
            child = ch.get(comp)
            cls = child.__class__
            if cls is dict:
                nxt = child
            elif cls is Branch:
                nxt = child.children
            else:
                return False
            trail.append((ch, comp))
            ch = nxt
        child = ch.get(last)
        cls = child.__class__
        if child is None or cls is dict:
            return False
        if cls is Branch:
            left = del_row(child.rows, row)
            if left == child.rows:
                return False
            if left is not None:
                child.rows = left
            elif child.children:
                ch[last] = child.children
            else:
                del ch[last]
        else:
            left = del_row(child, row)
            if left == child:
                return False
            if left is None:
                del ch[last]
            else:
                ch[last] = left
        self.leaves -= 1
        for parent, comp in reversed(trail):
            v = parent[comp]
            if v.__class__ is dict:
                if v:
                    break
                del parent[comp]
            else:  # Branch: reduced to its own rows it becomes a plain leaf slot again
                if v.children:
                    break
                parent[comp] = v.rows
                break
        return True

    def get(self, path: str) -> object | None:
        v: object = self.root
        for comp in path.split("."):
            cls = v.__class__
            if cls is Branch:
                v = v.children  # type: ignore[attr-defined]
            elif cls is not dict:
                return None
            v = v.get(comp)  # type: ignore[attr-defined]
            if v is None:
                return None
        return v

    def find(self, pattern: str, matchers: list[Matcher] | None = None) -> tuple[list[str], list[object]]:
        """Paths and child slot values matching a glob, as two parallel lists.

        `matchers` is `compile_path(pattern)` when the caller compiled it already (the index does, before
        taking its lock). Two flat lists rather than (path, node) pairs: pairs are GC-tracked objects, and a
        wide find that allocates a hundred thousand of them sets off full collections of the whole heap."""
        if matchers is None:
            matchers = compile_path(pattern)
        paths: list[str] = [""]
        nodes: list[object] = [self.root]
        for depth, m in enumerate(matchers):
            npaths: list[str] = []
            nnodes: list[object] = []
            add_path, add_node = npaths.append, nnodes.append
            match, memo = m.match, {}
            for prefix, node in zip(paths, nodes, strict=True):
                cls = node.__class__
                if cls is dict:
                    ch = node
                elif cls is Branch:
                    ch = node.children  # type: ignore[attr-defined]
                else:
                    continue
                pre = prefix + "." if depth else ""
                if m.kind == "exact":
                    for name in m.names:
                        v = ch.get(name)  # type: ignore[attr-defined]
                        if v is not None:
                            add_path(pre + name)
                            add_node(v)
                elif m.kind == "all":
                    npaths.extend([pre + k for k in ch])  # type: ignore[attr-defined]
                    nnodes.extend(ch.values())  # type: ignore[attr-defined]
                else:
                    # siblings under different parents mostly share child names (every host has the
                    # same metrics), so remember each name's verdict instead of re-running the regex
                    for k, v in ch.items():  # type: ignore[attr-defined]
                        ok = memo.get(k)
                        if ok is None:
                            ok = memo[k] = match(k)
                        if ok:
                            add_path(pre + k)
                            add_node(v)
            if not npaths:
                return [], []
            paths, nodes = npaths, nnodes
        return paths, nodes

    def iter_leaves(self) -> Iterator[tuple[str, Rows]]:
        """Every (path, rows) in the tree, depth first."""
        stack: list[tuple[str, dict]] = [("", self.root)]
        while stack:
            prefix, ch = stack.pop()
            for k, v in ch.items():
                path = prefix + "." + k if ch is not self.root else k
                cls = v.__class__
                if cls is dict:
                    stack.append((path, v))
                elif cls is Branch:
                    if v.rows is not None:
                        yield path, v.rows
                    stack.append((path, v.children))
                else:
                    yield path, v
