"""The benchmark pipeline: config -> runner -> sweep -> results -> plots and report."""
