"""Chunk stores: where completed chunks are persisted (Cassandra with Metrictank's schema, or SQLite)."""

from metrictank.store.base import ChunkStore, ChunkWrite, StoreClosed, queue_index
from metrictank.store.factory import open_store

__all__ = ["ChunkStore", "ChunkWrite", "StoreClosed", "open_store", "queue_index"]
