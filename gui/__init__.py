"""The PySide6 desktop app. Imports annotation; reaches model only through workers."""
