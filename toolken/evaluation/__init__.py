"""Evaluation against the papers: benchmark loaders and the papers' metrics.

ToolkenGPT (Hao et al., 2023): FuncQA one-hop / multi-hop, KAMEL, GSM8K-XL; Gorilla's
APIBench (Patil et al., 2023): TorchHub, HuggingFace, TensorFlow Hub.

    from toolken.evaluation import load_benchmark, score, aggregate, write_report
    examples, skipped = load_benchmark("funcqa-oh", "funcqa_oh.json")
    scores = [score("funcqa-oh", text, ex.gold) for ex, text in zip(examples, outputs)]
    aggregate("funcqa-oh", scores)  # {"accuracy": ..., "accuracy_em2": ...}

APIBench scoring needs the provider's documentation:
``apis = ApiIndex.from_file("api/huggingface_api.jsonl")``, then ``score(..., apis=apis)``.
Nothing here imports torch.
"""

from .loaders import (BENCHMARKS, Example, call_ops, exact_value, load_apibench, load_benchmark,
                      load_funcqa_mh, load_funcqa_oh, load_gsm8k_xl, load_kamel, load_warnings,
                      read_records)
from .api_match import (PROVIDERS, ApiIndex, ApiMatch, call_keys, doc_key, extract_api_call,
                        score_api)
from .metrics import (METRIC_KEYS, PREDICTION_KEYS, REPORT_KEYS, aggregate, approx_correct,
                      em2_correct, final_number, first_tool, relation_id, score, tool_correct,
                      write_report)

__all__ = ["BENCHMARKS", "Example", "call_ops", "exact_value", "load_warnings", "load_apibench", "load_benchmark", "load_funcqa_mh",
           "load_funcqa_oh", "load_gsm8k_xl", "load_kamel", "read_records", "METRIC_KEYS",
           "PREDICTION_KEYS", "PROVIDERS", "REPORT_KEYS", "ApiIndex", "ApiMatch", "aggregate",
           "approx_correct", "call_keys", "doc_key", "em2_correct", "extract_api_call",
           "final_number", "first_tool", "relation_id", "score", "score_api", "tool_correct",
           "write_report"]
