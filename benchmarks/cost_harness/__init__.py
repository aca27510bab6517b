"""The combiner-cost harness behind ``benchmarks/combiner_cost.py`` (the command line), one module
per job: ``rows`` (what to measure: the rows, their labels and targets, image sizes),
``references`` (the hand-written and torchjd autojac steps), ``model`` (the light multi-task
model and its forward), ``worker`` (one configuration measured in its own process) and
``report`` (the markdown table)."""
