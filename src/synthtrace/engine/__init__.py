"""The engine: records in, rows out; every LLM call through the gateway (journal → limiter → client)."""
