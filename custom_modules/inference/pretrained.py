"""SpeechBrain inference interfaces for the models of this project, and loading a pretrained folder.

A *pretrained folder* is what :mod:`custom_modules.inference.export` writes
(``hyperparams.yaml``, ``model.ckpt``, ``README.md``): the shape of a model on
the Hugging Face hub, loaded with ``<Interface>.from_hparams(source=folder,
savedir=...)``. Which interface loads it is recorded in its
``hyperparams.yaml`` (``pretrained_interface``, a dotted class path):

* enhancement, waveform in and out (UNet-TCM, DCUNet):
  ``speechbrain.inference.enhancement.WaveformEnhancement``; its
  ``enhance_model`` is :class:`WaveformEnhancerModule` around the network
  (SpeechBrain unpacks ``(waveform, extra)`` from that module);
* spectral masking: ``speechbrain.inference.enhancement.SpectralMaskEnhancement``;
* separation (Conv-TasNet): :class:`WaveformSeparation`, SpeechBrain's
  ``SepformerSeparation`` (``separate_batch``, ``separate_file``) running a
  network that maps ``(batch, samples)`` to ``(batch, samples, sources)``;
* target speaker extraction (SpEx+): :class:`SpeakerExtraction`
  (``extract_batch``, ``extract_file(mixture, reference)``).

Loading a folder executes its ``hyperparams.yaml`` (HyperPyYAML builds the
objects it names): load only folders you trust.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from ruamel.yaml import YAML
from speechbrain.dataio import audio_io
from speechbrain.inference.interfaces import Pretrained
from speechbrain.inference.separation import SepformerSeparation

HPARAMS_FILE = "hyperparams.yaml"
INTERFACE_KEY = "pretrained_interface"


class PretrainedFolderError(ValueError):
    """A folder that is not a loadable pretrained folder (the message names it and the problem)."""


class WaveformEnhancerModule(torch.nn.Module):
    """A waveform model as SpeechBrain's ``WaveformEnhancement`` calls its ``enhance_model``.

    ``WaveformEnhancement.enhance_batch`` unpacks ``enhanced, _ = enhance_model(noisy)``;
    this returns ``(model(noisy), None)``.

    Arguments
    ---------
    model : torch.nn.Module
        ``(batch, samples)`` -> ``(batch, samples)``.

    Example
    -------
    >>> wrapper = WaveformEnhancerModule(torch.nn.Identity())
    >>> enhanced, extra = wrapper(torch.ones(2, 5))
    >>> tuple(enhanced.shape), extra
    ((2, 5), None)
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, noisy):
        """``(batch, samples)`` -> ``((batch, samples), None)``."""
        return self.model(noisy), None


class WaveformSeparation(SepformerSeparation):
    """SpeechBrain's separation interface for a network ``(batch, samples) -> (batch, samples, C)``.

    ``separate_file`` is SpeechBrain's (``SepformerSeparation``): the file is
    read, resampled to ``sample_rate`` when needed and the estimates are each
    scaled to a peak of 1. ``separate_batch`` runs ``modules.model``, which
    handles any input length itself (SpeechBrain's Sepformer path calls an
    encoder/masknet/decoder triple and zero-pads the output's last samples).

    Hyperparameters: ``sample_rate``, ``num_spks``; modules: ``model``.
    """

    MODULES_NEEDED = ["model"]
    HPARAMS_NEEDED = ["sample_rate", "num_spks"]

    def separate_batch(self, mix):
        """Estimated sources ``(batch, samples, num_spks)`` of mixtures ``(batch, samples)``."""
        with torch.no_grad():
            return self.mods.model(mix.to(self.device))


class SpeakerExtraction(Pretrained):
    """Target speaker extraction (SpEx+): a mixture and an enrolment of the target in, its speech out.

    The network (``modules.model``) provides ``embed(reference) -> (batch, D)``
    and ``extract(mixture, embedding) -> (batch, scales, samples)``; the first
    scale (SpEx+'s short-window decoder, the one the recipe scores) is the output.

    Inputs are read with SpeechBrain's audio loading (down-mixed to mono and
    resampled to ``sample_rate`` by the ``audio_normalizer``).

    Hyperparameters: ``sample_rate``; modules: ``model``.
    """

    MODULES_NEEDED = ["model"]
    HPARAMS_NEEDED = ["sample_rate"]

    def extract_batch(self, mixtures, references, reference_lengths=None):
        """The target speaker's speech ``(batch, samples)``.

        Arguments
        ---------
        mixtures : torch.Tensor
            ``(batch, samples)`` at ``sample_rate``.
        references : torch.Tensor
            ``(batch, reference samples)``, the enrolment of each target speaker.
        reference_lengths : torch.Tensor, optional
            ``(batch,)`` relative lengths of the references (SpeechBrain convention).
        """
        with torch.no_grad():
            model = self.mods.model
            embedding = model.embed(references.to(self.device), reference_lengths)
            return model.extract(mixtures.to(self.device), embedding)[:, 0]

    def extract_file(self, mixture, reference, output_filename=None):
        """Extract the speaker of the ``reference`` file from the ``mixture`` file.

        Returns the estimate ``(samples,)`` at ``sample_rate``; written to
        ``output_filename`` when given (at ``sample_rate``).
        """
        mix = self.load_audio(str(mixture)).unsqueeze(0)
        ref = self.load_audio(str(reference)).unsqueeze(0)
        estimate = self.extract_batch(mix, ref)
        if output_filename is not None:
            audio_io.save(output_filename, estimate.cpu(), self.hparams.sample_rate)
        return estimate.squeeze(0)

    def forward(self, mixtures, references, reference_lengths=None):
        """Same as :meth:`extract_batch`."""
        return self.extract_batch(mixtures, references, reference_lengths)


def read_interface_name(folder) -> str:
    """The dotted class path recorded under ``pretrained_interface`` in ``folder/hyperparams.yaml``.

    Raises
    ------
    PretrainedFolderError
        No folder, no ``hyperparams.yaml``, or no ``pretrained_interface`` in it.
    """
    folder = Path(folder)
    path = folder / HPARAMS_FILE
    if not folder.is_dir():
        raise PretrainedFolderError(f"{folder}: pretrained folder not found")
    if not path.is_file():
        raise PretrainedFolderError(
            f"{folder}: no {HPARAMS_FILE} (not a folder written by custom_modules.export?)"
        )
    try:
        tree = YAML().load(path.read_text(encoding="utf-8"))
    except Exception as err:  # ruamel raises several unrelated types
        raise PretrainedFolderError(f"{path}: not readable YAML ({err})") from err
    name = tree.get(INTERFACE_KEY) if isinstance(tree, dict) else None
    if not isinstance(name, str) or "." not in name:
        raise PretrainedFolderError(
            f"{path}: no {INTERFACE_KEY!r} naming the SpeechBrain interface class "
            "(export the run again with python -m custom_modules.export)"
        )
    return str(name)


def interface_class(dotted: str):
    """The class named by a dotted path (``speechbrain.inference.enhancement.WaveformEnhancement``)."""
    module_name, _, class_name = dotted.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise PretrainedFolderError(f"cannot import the interface {dotted} ({err})") from err
    if not (isinstance(cls, type) and issubclass(cls, Pretrained)):
        raise PretrainedFolderError(f"{dotted} is not a speechbrain Pretrained interface")
    return cls


def load_pretrained(folder, device="cpu", savedir=None):
    """Load a pretrained folder with the interface it records (local files only).

    Arguments
    ---------
    folder : str or Path
        Written by :mod:`custom_modules.inference.export`.
    device : str
        Torch device of the modules.
    savedir : str or Path, optional
        SpeechBrain's ``savedir`` (links to the folder's files); default the
        folder itself, so nothing is written anywhere.

    Returns
    -------
    speechbrain.inference.interfaces.Pretrained
        In eval mode, parameters frozen.
    """
    folder = Path(folder).resolve()
    cls = interface_class(read_interface_name(folder))
    try:
        return cls.from_hparams(
            source=str(folder),
            savedir=str(savedir or folder),
            run_opts={"device": str(device)},
        )
    except Exception as err:  # HyperPyYAML and the pretrainer raise many types
        reason = " ".join(str(err).split())
        raise PretrainedFolderError(
            f"{folder}: cannot load ({type(err).__name__}: {reason})"
        ) from err


def network_of(interface) -> torch.nn.Module:
    """The trained network inside a loaded interface (``model``, or ``enhance_model`` unwrapped)."""
    mods = interface.mods
    module = mods["model"] if "model" in mods else mods["enhance_model"]
    return module.model if isinstance(module, WaveformEnhancerModule) else module
