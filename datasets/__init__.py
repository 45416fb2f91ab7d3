"""Readers, logo rendering, augmentations, corpus and demo builders."""
