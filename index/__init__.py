"""Reference index: FAISS vectors, SQLite metadata, integrity checks."""
