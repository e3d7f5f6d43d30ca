"""The two ways things go wrong in a sweep."""


class BenchError(Exception):
    """The sweep cannot run at all (not root, no topology, a tool missing): say what to do."""


class PointFailed(Exception):
    """One point cannot be measured; its record says why and the sweep goes on."""
