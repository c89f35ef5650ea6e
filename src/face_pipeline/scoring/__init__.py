"""How answers are scored and given: losses, scores, calibration, bootstrap intervals, plots, answer columns."""
