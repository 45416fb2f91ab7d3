"""HTTP inference service (FastAPI); see the service issue. Nothing here is imported by the scanner."""
