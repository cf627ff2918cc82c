"""The annotation document: projects, masks, paint operations and file formats.

This package is Qt-free and torch-free (numpy, Pillow and pycocotools only), so it
can be tested and used headless; ``tests/test_layering.py`` enforces that.
"""
