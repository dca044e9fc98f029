"""nanologic."""
