"""Hostile inputs (issue #17, ../shared/hostile-cases.md): each case makes its own files in
tmp_path and checks one ``error:`` line naming the file, exit 2, and nothing written."""
