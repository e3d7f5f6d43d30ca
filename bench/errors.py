"""How things go wrong in a sweep."""


class BenchError(Exception):
    """The sweep cannot run at all (not root, no topology, a tool missing): say what to do."""


class PointFailed(Exception):
    """One point cannot be measured; its record says why and the sweep goes on."""


class PointUnsupported(PointFailed):
    """The server says it cannot run here (kernel, sandbox, interpreter): its points are unsupported, with why."""
