"""Results into words and pictures: pure functions of a run's results.json.

summary (repeats folded into cells), compare (two runs), plots (PNGs), report
(report.md), experiments (experiment sections); the metrics they show are
defined once, in metrics. Nothing here starts a process or touches a namespace.
"""
