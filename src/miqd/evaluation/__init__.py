"""The evaluation's results (paper §6.1, Tables 5-8, Figs. 8-9), apart from the scoring that feeds them.

* `tables`: the long-format tables and the paper's wide layout, as plain data (pure functions);
* `render`: that data as Markdown (report.md) and as HTML (the report page), one formatter for both;
* `figures`: the heatmaps and the scatter plot;
* `stage`: the `evaluate --report` step, which reads the scoring stage's files and writes all of it.

The scoring itself (a run's predictions, the HVS baselines) is `miqd.train.evaluate`.
"""
