"""The TUI's data layer: talking to the aggregator and turning answers into snapshots.

Nothing here imports Textual; the widgets only ever see the frozen snapshots of ``models``.
"""
