"""The performance harness behind ``benchmarks/performance.py`` (the command line), one module per
job: ``stats`` (pure helpers), ``plan`` (what to measure, the machine), ``workloads`` (the timed
steps), ``measure`` (the report's three sections) and ``report`` (the markdown)."""
