"""Evaluating an exported model: honest metrics, the reference report's figures, a model card."""
