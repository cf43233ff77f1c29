"""Data: problems, grading, error injection and DPO pairs (DESIGN §2).

Importing this package loads no model and touches no network.
"""

from policy.data.build import DATASET_KINDS, build_dataset, dataset_stats
from policy.data.corrupt import ERROR_KINDS
from policy.data.dpo import DPOConfig, dpo_pairs
from policy.data.generator import Difficulty, generate_problems
from policy.data.grading import StepCheck, StepError, answers_match, check_steps, evaluate, extract_answer
from policy.data.harvest import examples_from_samples
from policy.data.inject import InjectConfig, inject_errors
from policy.data.problems import PROMPT_TEMPLATE, Problem, encode_problem, format_prompt, load_gsm8k
from policy.data.segments import DPOPair, Example, Segment, check_example, render_example

__all__ = [
    "DATASET_KINDS",
    "DPOConfig",
    "DPOPair",
    "Difficulty",
    "ERROR_KINDS",
    "Example",
    "InjectConfig",
    "PROMPT_TEMPLATE",
    "Problem",
    "Segment",
    "StepCheck",
    "StepError",
    "answers_match",
    "build_dataset",
    "check_example",
    "check_steps",
    "dataset_stats",
    "dpo_pairs",
    "encode_problem",
    "evaluate",
    "examples_from_samples",
    "extract_answer",
    "format_prompt",
    "generate_problems",
    "inject_errors",
    "load_gsm8k",
    "render_example",
]
