"""Interpretability math: attribution maps and their evaluation, feature visualization, error analysis.

Models map float images (B,1,48,48) in pixel units (0..255) to (B,7) logits; results are CPU tensors
or plain floats.
"""

from fer.interpret.activation_max import (
    dataset_max_activation,
    dead_filters,
    maximize_activation,
    maximize_class,
)
from fer.interpret.attribution import METHODS, attribute
from fer.interpret.evaluation import (
    bootstrap_interval,
    deletion_auc,
    evaluate_methods,
    mask_fraction,
    mass_inside,
    pointing_game,
    random_deletion_auc,
    randomization_check,
    rank_correlation,
    summarize,
    verdict,
)
from fer.interpret.features import channel_activations, feature_maps, top_exemplars
from fer.interpret.layers import TruncatedModel, conv_layers, last_conv, layer_by_name, layer_output
from fer.interpret.mistakes import confusion, most_confident_mistakes, most_confused_pairs, per_class_report

__all__ = [
    "METHODS",
    "TruncatedModel",
    "attribute",
    "bootstrap_interval",
    "channel_activations",
    "confusion",
    "conv_layers",
    "dataset_max_activation",
    "dead_filters",
    "deletion_auc",
    "evaluate_methods",
    "feature_maps",
    "last_conv",
    "layer_by_name",
    "layer_output",
    "mask_fraction",
    "mass_inside",
    "maximize_activation",
    "maximize_class",
    "most_confident_mistakes",
    "most_confused_pairs",
    "per_class_report",
    "pointing_game",
    "random_deletion_auc",
    "randomization_check",
    "rank_correlation",
    "summarize",
    "top_exemplars",
    "verdict",
]
