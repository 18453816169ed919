"""sluiceway: move massive datasets in and out of PostgreSQL through object storage."""

__version__ = "0.1.0"
