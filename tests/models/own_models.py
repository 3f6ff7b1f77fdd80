"""Source of the models of one's own used by the tests: written to a file OUTSIDE the repo,
then named by path in `models.<name>.class`, as a user would."""

TINY = '''
import torch
from torch import nn
from arctax.data.tokenize import VOCAB_SIZE
from arctax.models.grid2d_pe import Grid2DPE
from arctax.models.layers import Block


class Tiny(nn.Module):
    """A forward-only seq2seq model: decoded by the fallback (re-running forward)."""

    fmt = "seq2seq"
    supports_cache = False

    def __init__(self, d_model: int = 32, n_heads: int = 4, d_ff: int = 64):
        super().__init__()
        self.embed, self.pe = nn.Embedding(VOCAB_SIZE, d_model), Grid2DPE(d_model)
        self.enc = Block(d_model, n_heads, d_ff)
        self.dec = Block(d_model, n_heads, d_ff, cross=True)
        self.head = nn.Linear(d_model, VOCAB_SIZE)

    def forward(self, batch):
        mem = self.enc(self.embed(batch["src"]) + self.pe(batch["src_pos"]), key_mask=batch["src_mask"])
        y = self.embed(batch["tgt_in"]) + self.pe(batch["tgt_pos"])
        return self.head(self.dec(y, causal=True, mem=mem, mem_mask=batch["src_mask"]))


class NoFormat(nn.Module):
    def forward(self, batch):
        return batch


class NoDecoding(nn.Module):
    fmt = "decoder_only"

    def forward(self, batch):
        return batch


class Quadratic(nn.Module):
    """A size that grows with the square of its layer count (not extrapolated)."""

    fmt = "seq2seq"
    supports_cache = False

    def __init__(self, n_layers: int = 2):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(n_layers, n_layers) for _ in range(n_layers))

    def forward(self, batch):
        return batch
'''


def write(directory) -> str:
    """Write the models to ``directory/mymodels.py``; return that path."""
    path = directory / "mymodels.py"
    path.write_text(TINY)
    return str(path)
