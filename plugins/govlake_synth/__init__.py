"""Synthetic department deliveries for tests, benchmarks and ``govlake demo`` — not the runtime.

``generate``  one delivery of each of the six feeds of docs/sources.md, with faults and ground truth;
``synth``     rows for any declared feed from its column metadata (the 7th feed, XLSX sheets);
``codes``     check-character algorithms (an independent oracle: not the validation code it tests);
``data``, ``divisions``  word lists and code tables.

It depends on ``govlake.metadata`` and ``govlake.storage`` only; in ``govlake`` only the
``generate``/``demo`` commands (``govlake.commands.core``, ``govlake.runner.demo``) import it, lazily.
"""
