"""Labeling: label configs, Label Studio adapter, pre-annotations, active learning, agreement, export."""
