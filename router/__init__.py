"""Semantic router (ONNX embeddings + FAISS): issue #6. Not implemented yet."""
