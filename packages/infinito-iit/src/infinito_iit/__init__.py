"""infinito-iit."""
