"""Artifacts on disk: model directories, export formats, serving and provenance."""
