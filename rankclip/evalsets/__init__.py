"""Evaluation-set stage: the paper's benchmarks, fetched, verified and converted to the evaluation layout.

``registry`` names every set and its source files (plain Python: the workflow imports it while parsing),
``converter`` holds what every converter shares (verified sources, staged output), ``imagenet``, ``coco``
and ``linear_probe`` convert one family each, ``build`` is the entry point (``rankclip data eval-set``),
``imagenet_facts`` the OpenAI prompt templates and ImageNet-R's classes (also read by the evaluation).
"""
