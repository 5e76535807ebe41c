"""SpEx+: complete time-domain target speaker extraction.

After Ge, Xu, Wang, Chng, Dang and Li, "SpEx+: A Complete Time Domain Speaker
Extraction Network", Interspeech 2020 (arXiv:2005.04686), written from the
paper. Given a mixture and a reference (enrolment) utterance of the target
speaker, the network outputs the target speaker's speech at three scales.

Architecture (``(batch, channels, frames)`` layout throughout)
--------------------------------------------------------------
* **Twin multi-scale speech encoder** (:class:`MultiScaleEncoder`): three
  ``Conv1d(1, N, L_i, stride=L_1 // 2)`` + ReLU with windows ``L_1 < L_2 <
  L_3`` (paper: 20/80/160 samples at 8 kHz; 40/160/320 at 16 kHz). The same
  module (shared weights) encodes the mixture and the reference. The input is
  zero-padded at the end so that every scale yields the same number of
  frames, frame ``k`` of every scale starting at sample ``k * stride``.
* **Speaker encoder** (:class:`SpeakerEncoder`): channel-wise LayerNorm of the
  concatenated ``3N`` reference channels, 1x1 conv, ResNet blocks (1x1 convs,
  BatchNorm, PReLU, residual, max-pool 3), 1x1 conv to ``D`` and a mean over
  the (valid) frames: the speaker embedding ``v``. A linear speaker
  classification head on ``v`` is used only for the training loss.
* **Speaker extractor** (:class:`SpeakerExtractor`): channel-wise LayerNorm of
  the mixture's ``3N`` channels, 1x1 conv to ``O``, ``num_stacks`` stacks of
  ``blocks_per_stack`` TCN blocks (dilation ``2**b``); the first block of
  each stack also takes ``v``, repeated over frames and concatenated along
  channels. TCN block: 1x1 conv ``-> P``, PReLU, gLN, depthwise conv (kernel
  3, dilated, non-causal), PReLU, gLN, 1x1 conv ``-> O``, residual. Three
  mask heads (1x1 conv ``O -> N`` + ReLU) mask the three encoder outputs.
* **Multi-scale decoder**: one ``ConvTranspose1d(N, 1, L_i, stride)`` per
  scale, cut to the input length: estimates ``s1, s2, s3``.

The blocks (encoder, speaker encoder, extractor, norms) are in
:mod:`custom_modules.models.spex_plus_blocks`. Normalisations use torch's
built-ins: gLN is ``GroupNorm(1, C)`` (statistics over channels and frames per
utterance, per-channel gain and bias), cLN is ``LayerNorm`` over channels at
every frame.

Training objective (:class:`custom_modules.training.losses.SpexPlusLoss`): ``-(0.8 SI-SDR(s1) + 0.1
SI-SDR(s2) + 0.1 SI-SDR(s3)) + 0.5 CE(logits, speaker)``.

The paper's configuration at 16 kHz (the defaults of :class:`SpexPlus`) has
about 11.2 M parameters plus ``257 * num_speakers`` for the classification
head (see ``recipes/spex_plus/README.md`` for the measured counts).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from custom_modules.models.spex_plus_blocks import (
    MultiScaleEncoder,
    SpeakerEncoder,
    SpeakerExtractor,
)


class SpexPlusOutput(NamedTuple):
    """What :meth:`SpexPlus.forward` returns."""

    estimates: torch.Tensor  # (batch, 3, samples): s1 (short), s2 (middle), s3 (long window)
    speaker_logits: torch.Tensor | None  # (batch, num_speakers); None without a head
    embedding: torch.Tensor  # (batch, embedding_dim)


class SpexPlus(nn.Module):
    """SpEx+ target speaker extraction network (see the module docstring).

    Arguments
    ---------
    num_speakers : int
        Classes of the speaker-classification head (training speakers); 0 for
        no head (inference only; the head is never used to extract).
    num_filters : int
        ``N``, filters per encoder scale.
    kernel_sizes : tuple of int
        Encoder/decoder windows in samples (paper at 16 kHz: 40, 160, 320).
    stride : int, optional
        Frame shift (default: half the shortest window).
    bottleneck_channels : int
        ``O``, the TCN residual width.
    hidden_channels : int
        ``P``, the TCN inner width.
    embedding_dim : int
        ``D``, the speaker embedding size.
    speaker_hidden_channels : int
        Width after the speaker encoder's first 1x1 conv.
    speaker_block_channels : tuple of int
        Output widths of the speaker encoder's ResNet blocks.
    num_stacks, blocks_per_stack, kernel_size : int
        TCN layout: ``num_stacks`` stacks of ``blocks_per_stack`` blocks with
        dilations ``1, 2, ..., 2**(blocks_per_stack - 1)``.

    Example
    -------
    >>> model = SpexPlus(num_speakers=5, num_filters=16, kernel_sizes=(8, 16, 32),
    ...                  bottleneck_channels=16, hidden_channels=32, embedding_dim=12,
    ...                  speaker_hidden_channels=16, speaker_block_channels=(16, 16, 16),
    ...                  num_stacks=2, blocks_per_stack=3)
    >>> out = model(torch.randn(2, 1001), torch.randn(2, 900))
    >>> tuple(out.estimates.shape), tuple(out.speaker_logits.shape), tuple(out.embedding.shape)
    ((2, 3, 1001), (2, 5), (2, 12))
    """

    # Non-causal: dilated TCN convolutions over past and future frames, gLN (model cards say so).
    causal = False

    def __init__(self, num_speakers=0, num_filters=256, kernel_sizes=(40, 160, 320), stride=None,
                 bottleneck_channels=256, hidden_channels=512, embedding_dim=256,
                 speaker_hidden_channels=256, speaker_block_channels=(256, 512, 512),
                 num_stacks=4, blocks_per_stack=8, kernel_size=3):  # fmt: skip
        super().__init__()
        self.encoder = MultiScaleEncoder(num_filters, kernel_sizes, stride)
        self.speaker_encoder = SpeakerEncoder(
            3 * num_filters, speaker_hidden_channels, tuple(speaker_block_channels), embedding_dim
        )
        self.extractor = SpeakerExtractor(
            num_filters, bottleneck_channels, hidden_channels, embedding_dim,
            num_stacks, blocks_per_stack, kernel_size,
        )  # fmt: skip
        stride = self.encoder.stride
        self.decoders = nn.ModuleList(
            nn.ConvTranspose1d(num_filters, 1, k, stride=stride) for k in self.encoder.kernel_sizes
        )
        self.num_speakers = int(num_speakers)
        self.embedding_dim = int(embedding_dim)
        # Built last: a head added later (add_speaker_head) draws from this random state.
        self._head_rng_state = torch.get_rng_state()
        self.speaker_head = nn.Linear(embedding_dim, num_speakers) if num_speakers > 0 else None

    def add_speaker_head(self, num_speakers: int) -> None:
        """Add the speaker-classification head to a model built with ``num_speakers=0``.

        The head is built from the torch random state the constructor ended with,
        and the global torch random state is left where a constructor given
        ``num_speakers`` would have left it: when nothing else was meant to draw
        random numbers in between (the recipe calls it after building its
        objects and preparing its data), model and run are those of a model
        constructed with ``num_speakers``.

        Example
        -------
        >>> sizes = dict(num_filters=8, kernel_sizes=(4, 8, 16), bottleneck_channels=8,
        ...              hidden_channels=8, embedding_dim=6, speaker_hidden_channels=8,
        ...              speaker_block_channels=(8,), num_stacks=1, blocks_per_stack=1)
        >>> _ = torch.manual_seed(0)
        >>> given = SpexPlus(num_speakers=3, **sizes)
        >>> _ = torch.manual_seed(0)
        >>> later = SpexPlus(num_speakers=0, **sizes)
        >>> later.add_speaker_head(3)
        >>> torch.equal(later.speaker_head.weight, given.speaker_head.weight)
        True
        """
        if self.speaker_head is not None:
            raise ValueError(f"the model has a {self.num_speakers}-speaker head already")
        if num_speakers < 1:
            raise ValueError(f"num_speakers must be >= 1, got {num_speakers}")
        device = next(self.parameters()).device
        torch.set_rng_state(self._head_rng_state)
        self.speaker_head = nn.Linear(self.embedding_dim, int(num_speakers)).to(device)
        self.num_speakers = int(num_speakers)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """A checkpoint with a speaker head loads into a model built with ``num_speakers=0``.

        (A run records ``num_speakers: 0`` when the recipe sized the head from its data.)
        """
        weight = state_dict.get(f"{prefix}speaker_head.weight")
        if self.speaker_head is None and weight is not None:
            with torch.random.fork_rng(devices=[]):  # overwritten by the checkpoint anyway
                head = nn.Linear(self.embedding_dim, weight.shape[0])
            self.speaker_head = head.to(next(self.parameters()).device)
            self.num_speakers = int(weight.shape[0])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def min_reference_samples(self) -> int:
        """Shortest reference (samples) that survives the speaker encoder's pooling."""
        frames = self.speaker_encoder.min_frames
        return (frames - 1) * self.encoder.stride + self.encoder.kernel_sizes[0]

    @staticmethod
    def _check_batch(name, waveform):
        if waveform.dim() != 2:
            raise ValueError(f"{name} must be (batch, samples), got shape {tuple(waveform.shape)}")

    def embed(self, reference, reference_lengths=None):
        """Speaker embedding of a reference batch.

        Arguments
        ---------
        reference : torch.Tensor
            (batch, samples), zero-padded at the end.
        reference_lengths : torch.Tensor, optional
            (batch,) relative lengths in (0, 1] (SpeechBrain convention): the
            mean over frames ignores those computed from padding only.

        Returns
        -------
        torch.Tensor
            (batch, embedding_dim).
        """
        self._check_batch("reference", reference)
        total = reference.shape[-1]
        if total < self.min_reference_samples:
            raise ValueError(
                f"reference has {total} samples; SpEx+ needs at least "
                f"{self.min_reference_samples} (the speaker encoder pools "
                f"{self.speaker_encoder.min_frames} frames into one)"
            )
        if reference_lengths is None:
            samples = torch.full((reference.shape[0],), total, dtype=torch.long)
        else:
            samples = torch.round(reference_lengths.detach().double().cpu() * total).long()
        frames = torch.tensor([self.encoder.num_frames(int(n)) for n in samples])
        encoded = torch.cat(self.encoder(reference), dim=1)
        return self.speaker_encoder(encoded, frames)

    def classify(self, embedding):
        """Speaker logits of an embedding (training only); None without a head."""
        return None if self.speaker_head is None else self.speaker_head(embedding)

    def extract(self, mixture, embedding):
        """Estimates of the target speaker at the three scales.

        Arguments
        ---------
        mixture : torch.Tensor
            (batch, samples).
        embedding : torch.Tensor
            (batch, embedding_dim), from :meth:`embed`.

        Returns
        -------
        torch.Tensor
            (batch, 3, samples): s1 (short window, the output), s2, s3.
        """
        self._check_batch("mixture", mixture)
        num_samples = mixture.shape[-1]
        encoded = self.encoder(mixture)
        masks = self.extractor(encoded, embedding)
        estimates = [
            decoder(mask * enc).squeeze(1)[:, :num_samples]
            for decoder, mask, enc in zip(self.decoders, masks, encoded, strict=True)
        ]
        return torch.stack(estimates, dim=1)

    def forward(self, mixture, reference, reference_lengths=None) -> SpexPlusOutput:
        """Extract the reference speaker from the mixture (see :meth:`embed`, :meth:`extract`)."""
        embedding = self.embed(reference, reference_lengths)
        estimates = self.extract(mixture, embedding)
        return SpexPlusOutput(estimates, self.classify(embedding), embedding)
