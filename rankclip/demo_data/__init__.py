"""Demo-data stage: the corpora the demo makes or ships without a network.

``shapes`` renders the seeded shapes corpus and its evaluation sets, ``emoji`` pairs Noto emoji glyphs with
their CLDR names, ``fashion_mnist`` converts Debian's Fashion-MNIST; every set is written in the
evaluation layout (``rankclip.evalset_layout``).
"""
