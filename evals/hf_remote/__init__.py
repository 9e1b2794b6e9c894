"""Hugging Face remote code (`trust_remote_code=True`) computing our GPT in its every setting: the two files
configuration_clipgpt.py and modeling_clipgpt.py are copied into an export (evals/export_hf.py) and import only
torch and transformers; export.py writes their config and weights."""
