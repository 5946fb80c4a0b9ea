"""The version of ganxfer, in a module of its own so that any module may import it without importing the package API."""

__version__ = "0.1.0"
