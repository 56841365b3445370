"""Anatomy: the body model (``body``, ``poses``), the labelled template, its registration to any
scan, label transfer and its evaluation."""
