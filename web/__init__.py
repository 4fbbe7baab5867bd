"""The pages people see: served by the same aiohttp process as the gateway."""
