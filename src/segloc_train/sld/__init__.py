"""Training of the SLD* landmark network (:mod:`segloc_train.sld.train_sld`), ``segloc train sld``."""
