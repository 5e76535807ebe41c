"""Parameters and MACs of the SpEx+ recipe YAMLs (custom_modules.evaluation.spex_plus_size)."""

from custom_modules.evaluation.complexity import count_parameters, load_recipe_model
from custom_modules.evaluation.spex_plus_size import DEFAULT_YAMLS, main, model_size


def test_model_size_of_the_cpu_yaml(capsys):
    cpu_yaml = next(p for p in DEFAULT_YAMLS if p.name == "spex_plus_cpu.yaml")
    size = model_size(cpu_yaml, num_speakers=3)
    model = load_recipe_model(cpu_yaml, {"num_speakers": 0})
    embedding_dim = model.speaker_encoder.output.out_channels
    # The head: one weight per embedding dimension and a bias, per speaker.
    assert size["parameters_with_head"] - size["parameters"] == (embedding_dim + 1) * 3
    assert size["parameters"] == count_parameters(model)
    # A second of mixture through the whole extractor costs more than one of reference
    # through the speaker branch alone.
    assert size["extraction_macs_per_second"] > size["embedding_macs_per_reference_second"] > 0
    results = main([str(cpu_yaml), "--num_speakers", "3"])
    assert results == {str(cpu_yaml): size}
    assert f"{size['parameters']:,} parameters" in capsys.readouterr().out
