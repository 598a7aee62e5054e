"""The benchmark harness behind ``experiments/benchmarks/bench.py``, split by role so each contender's
recipe can be read (and audited for fairness) on its own page:

- ``workload``: what every contender gets alike (cases, records, model, prompt text, batch size);
- ``contenders``: one module per training stack, each running the same steps under the same clock;
- ``measure``: the step clock, device sync, FLOPs per token, MFU peak, peak memory, machine
  description, worker launches;
- ``suite`` / ``memory``: the drivers (interleaved launches) and the workers they launch;
- ``report`` / ``targets``: the Markdown tables written next to the results JSON, and the GPU suite's
  targets judged from that JSON.

Worker-side modules import torch and the training stacks inside functions, so the driver process
stays light and each measured run pays its own imports outside the timed steps.
"""
