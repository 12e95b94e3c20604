"""ExportSpec rules, one test per rule; model-free and fast."""

import pytest

from exporter.errors import SpecError
from exporter.spec import AdapterSpec, ExportSpec, FidelitySpec, ModelSpec, QuantSpec


def test_defaults_are_embedded_int4_without_adapters():
    s = ExportSpec()
    assert (s.model.base, s.quant.scheme, s.adapters.strategy, s.format) == ("smollm2-135m", "int4", "none", "executorch")
    assert s.ops == ["extract", "update", "generate"]


def test_adapters_default_to_separate():
    assert AdapterSpec(paths={"extract": "x"}).strategy == "separate"


@pytest.mark.parametrize("scheme", ["int6", "INT4", ""])
def test_quant_scheme_choices(scheme):
    with pytest.raises(SpecError, match=r"quant.scheme must be one of \['int4', 'int8', 'fp32'\]"):
        QuantSpec(scheme=scheme)


@pytest.mark.parametrize("name", ["Extract", "1op", "ex-tract", "a" * 40, "op name"])
def test_op_name_format(name):
    with pytest.raises(SpecError, match="adapter op name must match"):
        AdapterSpec(paths={name: "x"})


def test_other_op_names_allowed():
    assert ExportSpec(adapters=AdapterSpec(paths={"summarize_v2": "x"})).ops == ["summarize_v2"]


def test_none_strategy_conflicts_with_adapters():
    with pytest.raises(SpecError, match="conflicts with adapters.paths"):
        AdapterSpec(paths={"extract": "x"}, strategy="none")


@pytest.mark.parametrize("strategy", ["merged", "separate"])
def test_strategies_need_adapters(strategy):
    with pytest.raises(SpecError, match="needs at least one adapter"):
        AdapterSpec(strategy=strategy)


def test_group_size_choices():
    with pytest.raises(SpecError, match="group_size"):
        QuantSpec(group_size=48)


def test_max_seq_len_bounds():
    with pytest.raises(SpecError, match="max_seq_len"):
        ModelSpec(max_seq_len=8)


def test_fidelity_tokens_must_fit_context():
    with pytest.raises(SpecError, match="fidelity.tokens"):
        ExportSpec(model=ModelSpec(max_seq_len=64), fidelity=FidelitySpec(tokens=64))


def test_round_trip_and_unknown_keys():
    s = ExportSpec(adapters=AdapterSpec(paths={"extract": "a"}, strategy="merged"), quant=QuantSpec("int8"))
    assert ExportSpec.from_dict(s.to_dict()) == s
    with pytest.raises(SpecError, match=r"unknown spec keys \['quantization'\]"):
        ExportSpec.from_dict({"quantization": {}})
    with pytest.raises(SpecError, match=r"unknown keys \['bits'\] in spec section 'quant'"):
        ExportSpec.from_dict({"quant": {"bits": 4}})


def test_cli_choices_and_defaults_are_the_specs():
    """memlora-export re-lists nothing: each option's choices are its spec field's Literal members and its default
    the field's default (issue #15)."""
    import dataclasses
    import typing

    from exporter import spec as S
    from exporter.cli import build_parser

    fields = {"target": (ExportSpec, "target"), "format": (ExportSpec, "format"), "base": (ModelSpec, "base"),
              "max_seq_len": (ModelSpec, "max_seq_len"), "strategy": (AdapterSpec, "strategy"),
              "quant": (QuantSpec, "scheme"), "group_size": (QuantSpec, "group_size"),
              "int4_weights": (QuantSpec, "int4_weights"), "accuracy_level": (QuantSpec, "accuracy_level"),
              "lm_head_bits": (QuantSpec, "lm_head_bits"), "lora_dtype": (QuantSpec, "lora_dtype"),
              "fidelity_tokens": (FidelitySpec, "tokens"), "embedder": (S.EmbedderSpec, "enabled"),
              "embedder_quant": (S.EmbedderSpec, "quant"), "out": (S.OutputSpec, "path")}
    flags = {"force": (S.OutputSpec, "force", False), "skip_fidelity": (FidelitySpec, "enabled", True),
             "strict_fidelity": (FidelitySpec, "strict", False)}  # store_true flags: False = the spec's default
    actions = {a.dest: a for a in build_parser()._actions}
    for dest, (section, name) in fields.items():
        a = actions[dest]
        f = next(f for f in dataclasses.fields(section) if f.name == name)
        assert a.default == f.default, dest
        hint = typing.get_type_hints(section)[name]
        members = [m for arg in (typing.get_args(hint) if typing.get_origin(hint) is typing.Union else [hint])
                   for m in typing.get_args(arg) if typing.get_origin(arg) is typing.Literal]
        assert (a.choices is None and not members) or list(a.choices) == members, dest
    for dest, (section, name, spec_default) in flags.items():
        f = next(f for f in dataclasses.fields(section) if f.name == name)
        assert actions[dest].default is False and f.default is spec_default, dest
    assert actions["out"].default == "memlora_bundle"


def test_quant_literal_fields_are_checked():
    for kw, msg in [({"accuracy_level": 2}, r"quant.accuracy_level must be one of \[1, 4\]"),
                    ({"lm_head_bits": 3}, r"quant.lm_head_bits must be one of \[4, 8\]"),
                    ({"int4_weights": "asym"}, "quant.int4_weights must be asymmetric or symmetric"),
                    ({"int8_variant": "static"}, r"quant.int8_variant must be one of \['matmulnbits', 'dynamic'\]")]:
        with pytest.raises(SpecError, match=msg):
            QuantSpec(**kw)
    assert QuantSpec().int8_variant == "matmulnbits"
