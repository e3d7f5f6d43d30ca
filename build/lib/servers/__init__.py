"""The HTTP servers under test: one HTTP/1.1 core (http.py), one module per I/O model.

Run one with `python3 -m servers KIND --host ADDR -p PORT`; `python3 -m servers --list` names the kinds.
"""
