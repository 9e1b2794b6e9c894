"""Looking at what a run learned: load its newest checkpoint (`evals.checkpoint_model`), sample from it
(`sample.py` at the repo root) and score it on HellaSwag (`python -m evals.hellaswag`)."""
