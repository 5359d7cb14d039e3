"""Corpora (manifests) and the extraction stages that turn audio into cached features."""
