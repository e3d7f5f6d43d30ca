"""Results into words and pictures: pure functions of a run's results.json.

summary (repeats folded into cells), tables (cells with their badges), report and
experiments (a run's Document), document (the Document and report.md), html and
templates/ (report.html, index.html, comparison pages), plots (PNG and SVG),
compare (two runs), index (every run under a directory); the metrics they show
are defined once, in metrics. Nothing here starts a process or touches a namespace.
"""
