"""The dashboard's panels; each shows one part of a ``Snapshot``."""
