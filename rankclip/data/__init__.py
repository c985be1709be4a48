"""Data stages: the training corpus (web shards, captions, subsets, loader), the demo's own corpora (demo
shapes, emoji, Fashion-MNIST) and the converters of the paper's evaluation sets, over one evaluation-set
layout (``evalset_layout``) and the shard writer (``shards``)."""
