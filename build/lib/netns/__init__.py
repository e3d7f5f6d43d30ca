"""Network-namespace topology of the testbed (pyroute2) and helpers to run inside it."""
