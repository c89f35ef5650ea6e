"""Answers for new photos: the predictor, its worker processes, and the served model."""
