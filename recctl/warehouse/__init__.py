"""The DuckDB warehouse: one file, one writer at a time, any number of read-only readers."""

from recctl.warehouse.connection import Warehouse, open_reader, open_writer, reopen_writer, writer_lock

__all__ = ["Warehouse", "open_reader", "open_writer", "reopen_writer", "writer_lock"]
