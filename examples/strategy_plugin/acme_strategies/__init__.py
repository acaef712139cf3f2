"""Example mmbot strategy plug-in (see the strategy author's guide in mmbot's README)."""
