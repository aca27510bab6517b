"""The applications on top of the zoo: the ``mtlzoo`` command, benchmarks, data checks."""
