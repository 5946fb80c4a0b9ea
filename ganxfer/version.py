"""The version of ganxfer, alone, so that any module may import it without importing the package's API."""

__version__ = "0.1.0"
