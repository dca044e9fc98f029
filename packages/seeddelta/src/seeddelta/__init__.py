"""seeddelta."""
