"""Config of the clipgpt GPT for Hugging Face (written by clipgpt's `python -m evals.export_hf`).

The keys are clipgpt's `model` settings (its model/config.py), with vocab_size the tokenizer's ids (the padded
rows of training are not exported). Loaded by `AutoConfig.from_pretrained(dir, trust_remote_code=True)`.
"""

from transformers import PretrainedConfig


class ClipGPTConfig(PretrainedConfig):
    model_type = "clipgpt"

    def __init__(self, n_layer=12, n_head=12, n_embd=768, head_dim=64, vocab_size=50257, block_size=1024,
                 norm="layernorm", norm_affine=True, norm_eps=1e-5, pos_emb="learned", rope_base=10000.0,
                 mlp="gelu", mlp_ratio=4, qk_norm=False, bias=True, tie_word_embeddings=True, **kwargs):
        self.n_layer, self.n_head, self.n_embd, self.head_dim = n_layer, n_head, n_embd, head_dim
        self.vocab_size, self.block_size = vocab_size, block_size
        self.norm, self.norm_affine, self.norm_eps = norm, norm_affine, norm_eps
        self.pos_emb, self.rope_base = pos_emb, rope_base
        self.mlp, self.mlp_ratio, self.qk_norm, self.bias = mlp, mlp_ratio, qk_norm, bias
        # the names generic HF code reads
        self.hidden_size, self.num_hidden_layers, self.num_attention_heads = n_embd, n_layer, n_head
        self.max_position_embeddings = block_size
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
