"""The GPU acceptance check behind ``benchmarks/gpu_check.py`` (the command line), one module per
job: ``common`` (settings, records, running a command), ``parts`` (tests, trainings, bench; the
list of parts), ``measures`` (performance, combiner cost, export) and ``report`` (gpu.md)."""
