"""Memory index: series definitions, row numbering, Graphite find and tag queries."""

from metrictank.index.defbatch import DefBatch
from metrictank.index.keys import format_id, parse_id, parse_ids, split_md5
from metrictank.index.memory import PUBLIC_ORG, Definition, MemoryIndex, Node
from metrictank.index.tags import TagQueryError

__all__ = [
    "DefBatch",
    "PUBLIC_ORG",
    "Definition",
    "MemoryIndex",
    "Node",
    "TagQueryError",
    "format_id",
    "parse_id",
    "parse_ids",
    "split_md5",
]
