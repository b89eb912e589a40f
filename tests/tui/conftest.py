"""The TUI tests run on asyncio through ``fake.run`` (``asyncio.run``); no test here is marked
``trio``, so pytest-trio leaves them alone."""
