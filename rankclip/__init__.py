"""RankCLIP reproduction: ranking-consistent language-image pretraining on open_clip."""

__version__ = "0.1.0"
