"""docs/config.md lists every training config key with the default the code has (eval/config_reference.py)."""
from __future__ import annotations

import dataclasses


def test_the_page_is_current(load_script):
    ref = load_script("eval/config_reference.py")
    assert ref.main(["--check"]) == 0, "docs/config.md is stale: run python eval/config_reference.py"


def test_every_key_has_a_row_and_a_changed_default_is_caught(load_script, monkeypatch):
    from vidgen.distillation.task import DistillTrainConfig
    from vidgen.training.config import GeneratorTrainConfig, TrainConfig
    from vidgen.training.finetune import FineTuneConfig
    ref = load_script("eval/config_reference.py")
    page = ref.PAGE.read_text()

    def keys(cls, prefix=""):
        for f in dataclasses.fields(cls):
            value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            yield from keys(type(value), f"{prefix}{f.name}.") if dataclasses.is_dataclass(value) else [prefix + f.name]

    for cls in (TrainConfig, GeneratorTrainConfig, DistillTrainConfig, FineTuneConfig):
        missing = [k for k in keys(cls) if f"| `{k}` |" not in page]
        assert not missing, f"{cls.__name__}: keys without a row in docs/config.md: {missing}"
    assert "| `optim.lr` | `0.0005` | peak learning rate (AdamW) |" in page
    from vidgen.training import config
    monkeypatch.setattr(config.OptimConfig.__dataclass_fields__["lr"], "default", 1e-3)
    assert "| `optim.lr` | `0.001` |" in ref.render(page) and ref.render(page) != page


def test_field_notes_read_the_line_and_the_lines_above(load_script, monkeypatch):
    ref = load_script("eval/config_reference.py")
    source = """@dataclass
class X:
    \"\"\"doc\"\"\"

    a: int = 1  # on the line
    # above, first
    # above, second
    b: str = "x"
    c: float = 0.0
    _ranges = {}
"""
    monkeypatch.setattr(ref.inspect, "getsource", lambda cls: source)
    assert ref.field_notes(object) == {"a": "on the line", "b": "above, first above, second", "c": ""}
