"""The DuckDB warehouse: one file, one writer at a time, any number of read-only readers."""

from recctl.warehouse.connection import Warehouse, open_reader, open_writer

__all__ = ["Warehouse", "open_reader", "open_writer"]
