"""Evaluation stage: zero-shot classification, retrieval, linear probes and representation analysis.

Every task reads image/text embeddings through an on-disk cache keyed by the checkpoint's and the data's
content hashes (``embeddings.py``), computes its metrics with plain functions (``metrics.py``,
``linear_probe.py``, ``analysis.py``) and returns a validated ``EvalResult`` (``results.py``), one JSON
file per (run, benchmark). ``Evaluator`` ties them together; ``cli.py`` is ``rankclip eval``.
"""

from rankclip.eval.datasets import DatasetError, WdsSplit
from rankclip.eval.embeddings import EmbeddingCache, Encoder, PromptEmbeddings, SplitEmbeddings
from rankclip.eval.evaluator import Evaluator, RunInfo
from rankclip.eval.linear_probe import LinearProbeConfig, linear_probe
from rankclip.eval.metrics import (
    class_embeddings,
    modality_gap,
    positive_ranks,
    retrieval_ranks,
    retrieval_recall,
    topk_accuracy,
    zeroshot_ranks,
)
from rankclip.eval.results import EvalResult, ResultsError, read_result, read_results, write_result

__all__ = [
    "DatasetError",
    "EmbeddingCache",
    "EvalResult",
    "Encoder",
    "Evaluator",
    "LinearProbeConfig",
    "PromptEmbeddings",
    "ResultsError",
    "RunInfo",
    "SplitEmbeddings",
    "WdsSplit",
    "class_embeddings",
    "linear_probe",
    "modality_gap",
    "positive_ranks",
    "read_result",
    "read_results",
    "retrieval_ranks",
    "retrieval_recall",
    "topk_accuracy",
    "write_result",
    "zeroshot_ranks",
]
