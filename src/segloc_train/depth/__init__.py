"""Training the monocular depth network: ``segloc train depth``."""
