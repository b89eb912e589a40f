"""The actors: workers, the writer (group commit), the reader pool, the hub with its tail, and
the shared replay cache. Each talks to the others through trio memory channels."""
