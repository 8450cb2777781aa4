"""`python analyze.py`: evaluate a checkpoint on a split, explain it, or predict a data set with it.

`fer.analysis.run.run(cfg)` is the entry; `select` picks the checkpoint, its data and the rows; `scores`,
`saliency` and `filters` are the report's sections, each adding numbers and figures to one `Analysis`
(`record`). This file imports none of them: fer.ensemble imports `select`, and `run` imports fer.ensemble.
"""
