"""Anatomy: the labelled template body, and (to come) its registration to any scan."""
