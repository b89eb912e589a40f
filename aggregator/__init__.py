"""A deduplicating pub-sub log aggregator on trio."""

__version__ = "0.1.0"
