"""Corpora for training: the reproducible style-picture corpus (build_style_corpus)."""
