"""The paper's "+Grid2D" ablation (its Exp 1), as a model of your own.

The encoder-decoder of Exp 0 with the champion's 2D grid positions (half the channels encode
the row, half the column, from each token's real coordinates) on source and target, and no
context encoder: the row of the paper's ablation ladder between ``encoder_decoder`` (Exp 0)
and ``champion``. arctax now ships it as the ``grid2d`` rung of ``config/ladder.yaml``
(``EncoderDecoder(positions="grid2d")``, the same positions); this file stays the worked
example of a model of your own. Grid2D has no parameters, so at the
encoder-decoder's sizes (``extends: encoder_decoder`` in config.yaml) it has exactly Exp 0's
parameter count: the two differ in their positions alone.

It uses only public pieces of arctax (docs/MODELS.md): the encoder-decoder, whose hooks are
the supported way to build a variant, and the Grid2D positions the champion uses. The batch
format, cached decoding and the layers adaptation targets come with them.
"""

from __future__ import annotations

from arctax.models.encoder_decoder import EncoderDecoder, Grid2DPositions


class Grid2DEncoderDecoder(Grid2DPositions, EncoderDecoder):
    """Encoder-decoder with Grid2D positions on source and target (the paper's +Grid2D)."""

    fmt = "seq2seq"  # input grid -> output grid; no demonstrations in the batch
