"""Keras networks: the builders, the embedding heads and the mix of the two."""
