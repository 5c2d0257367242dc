"""Tool retrieval: the catalog, (query, tool) pairs from real conversations, BM25 and a contrastively trained encoder.

``catalog`` (tools and distractors), ``pairs`` (training and held-out pairs), ``bm25`` (the lexical baseline),
``encoder`` (mean-pooled embeddings with a LoRA adapter), ``train`` (in-batch InfoNCE and the embedding index),
``metrics`` (Recall@k and MRR with bootstrap intervals) and ``stage`` (``stage=retriever``).
"""
