"""NinjaDesc training: NinjaNet against an inversion attacker (:mod:`segloc_train.ninjadesc.train_ninjadesc`)."""
