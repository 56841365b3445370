"""Exports: region maps (coloured meshes, 2D body maps, UV atlases); later tables and reports."""
