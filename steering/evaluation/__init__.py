"""Measuring a trait: the offline trait judge and its encoder, the LLM judge, fluency, the evaluation table, the
selection sweep that chooses the shipped defaults, and the rating statistics (torch-free)."""
