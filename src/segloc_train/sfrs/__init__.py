"""SFRS training of the NetVLAD retrieval network (``segloc train sfrs``); see :mod:`segloc_train.sfrs.train_sfrs`."""
