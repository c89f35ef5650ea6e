"""How answers are scored: losses, calibration, bootstrap intervals."""
