"""``adaptkd bench``: the step time of every method (and balancer) against its physical floor.

Every method runs through the real engine — a :class:`~adaptkd.engine.trainer.Trainer` built
from a config with random-init teachers, fed one fixed random batch — and
:meth:`Trainer.train_step` is timed: augmentation, every network's forward, the method, the
balancer's backward and the optimiser steps, i.e. what a user's training step costs.

The **physical floor** of a network setup is what no distillation method can avoid: every frozen
teacher's forward without grad, every learner's forward and backward (of a plain cross-entropy)
and its optimiser step, on the same (already normalised) batch, with the same optimiser settings,
precision and memory format, in the same process. Floors and methods are measured *interleaved*
(round-robin blocks of steps, the starting variant rotating every round) so that drift of the
machine's speed hits all of them alike; ratios are the median over rounds of the per-round ratio
of medians (paired), which cancels drift that a ratio of global medians would not.

Besides the registered methods and balancers, a bench can time variants of a method with other
options (``--variant LABEL=METHOD:key=value``), several teachers of different architectures
(``--teacher a,b:key=value,hf:FOLDER``), each method alone on one step's fixed logits and features
(:class:`AloneVariant`) and each method in a hand-written loop over :class:`adaptkd.Distiller`
(:class:`DistillerVariant`). Balancers, variants and networks share one option syntax,
``NAME:key=value:...`` (:func:`parse_options`). On the CPU every step is timed by both clocks (wall
and process CPU time); ``--clock`` picks the one the ratios use.

Peak memory is the peak of tensor memory allocated during one step above what was allocated
when the step began (activations, gradients, temporaries; weights and optimiser state excluded):
on CUDA from ``torch.cuda.max_memory_allocated``, on CPU from the allocator's events recorded by
``torch.profiler`` (``profile_memory=True``), in a separate, untimed step. The process's peak
resident set size (``resource.getrusage``) is reported beside it for the whole run.

Layout: :mod:`.options` parses the ``NAME:key=value`` option syntax, :mod:`.variants` holds what is
timed (a method through the engine, its floor, the method alone, the method over a Distiller),
:mod:`.timing` the clocks, memory probes and machine description, :mod:`.run` the settings
(:class:`BenchConfig`), the checks and the measurement (:func:`run_bench`), and :mod:`.table` the
terminal and Markdown tables of a report.
"""

from __future__ import annotations

from adaptkd.bench.options import parse_balancer, parse_network, parse_options, parse_variant, split_list
from adaptkd.bench.run import BenchConfig, method_setup, run_bench
from adaptkd.bench.table import markdown_table, render_table
from adaptkd.bench.timing import machine_info

__all__ = ["BenchConfig", "run_bench", "machine_info", "parse_options", "parse_balancer", "parse_variant",
           "parse_network", "split_list", "method_setup", "render_table", "markdown_table"]
