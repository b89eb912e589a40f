"""Shared fixtures. Trio tests are marked ``@pytest.mark.trio`` one by one (no trio_mode), so the
Textual tests, which run on asyncio, stay apart."""
