"""The porting report: what runs natively, decomposes or falls back on a backend, for a given model."""
