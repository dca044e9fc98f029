"""Generic infrastructure shared by the workspace's language-model packages."""

__version__ = "0.1.0"
