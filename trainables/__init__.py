"""Data plane of cpsweep: what runs inside a trial and on Ray Train workers.

Layers, each importing only from the ones listed before it (tests/test_import_cycles.py
checks this), and never from `service`:

    core/     names that cross process boundaries, the trial's config models, the
              import-path resolver and the model/dataset registries
    method/   the paper's method as pure functions over tensors: layer rotation, the
              end-of-period rules, recipe phases, data pruning; no Ray, no I/O
    data/     datasets on disk or generated, splits, the repeat/prune sampler
    models/   the built-in architectures and the model factory
    run/      the trial runtime: training engine, Ray Train worker loop, rank pool,
              user loops, control channel, checkpoints, energy metering
"""
