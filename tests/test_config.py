import pytest

from mcl.config import Config, config_from_dict, load_config
from mcl.errors import ConfigError


def test_defaults_validate():
    assert isinstance(config_from_dict({}), Config)


def test_demo_config_loads():
    config = load_config("configs/demo.yaml")
    assert config.mcl.stages >= 2 and config.data.source == "trifeature"


@pytest.mark.parametrize(
    "values,message",
    [
        ({"train": {"epoch": 3}}, "unknown config key 'train.epoch' (did you mean 'train.epochs'?)"),
        ({"trian": {}}, "did you mean 'train'"),
        ({"train": {"epochs": "many"}}, "config key 'train.epochs': expected an integer"),
        ({"train": {"epochs": 0}}, "config key 'train.epochs': expected a positive integer"),
        ({"mcl": {"negatives": "all"}}, "config key 'mcl.negatives': expected one of 'batch', 'mask'"),
        ({"augment": {"crop_scale": [0.9, 0.1]}}, "config key 'augment.crop_scale'"),
        ({"train": 5}, "config section 'train': expected a mapping"),
        ({"objective": {"temperature": -1}}, "objective.temperature"),
    ],
)
def test_bad_values_give_one_line_errors(values, message):
    with pytest.raises(ConfigError) as error:
        config_from_dict(values)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_overrides_and_yaml_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 2\n")
    assert load_config(path, ["train.epochs=7", "mcl.negatives=mask"]).train.epochs == 7
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(path, ["train.epochs"])
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_int_accepted_for_float_but_not_bool_for_int():
    assert config_from_dict({"train": {"lr": 1}}).train.lr == 1.0
    with pytest.raises(ConfigError):
        config_from_dict({"train": {"epochs": True}})


@pytest.mark.parametrize(("name", "backbone"), [("demo-vit", "vit"), ("demo-resnet18", "resnet18"),
                                                ("multimodal", "convnet"), ("multimodal-scratch", "convnet")])
def test_shipped_configs_load(name: str, backbone: str) -> None:
    from mcl.config import load_config

    config = load_config(f"configs/{name}.yaml")
    assert config.model.backbone == backbone


def test_bare_yaml_off_means_the_choice_off(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  amp: off\nmultimodal:\n  cache_locked_features: off\n")
    config = load_config(path)
    assert config.train.amp == "off" and config.multimodal.cache_locked_features == "off"


def test_zeroshot_prompts_name_only_their_attribute_or_value() -> None:
    from mcl.config import config_from_dict
    from mcl.errors import ConfigError

    prompts = {"dots": ["a garment with {dots} dots", "{value}"], "texture": ["a {texture_adj} shape"]}
    assert config_from_dict({"eval": {"zeroshot_prompts": prompts}}).eval.zeroshot_prompts == prompts
    for bad in ({"dots": ["a {color} garment"]}, {"dots": []}, {"dots": ["a {dots"]}, {"dots": "a {dots}"}):
        with pytest.raises(ConfigError, match="eval.zeroshot_prompts"):
            config_from_dict({"eval": {"zeroshot_prompts": bad}})


def test_linear_probe_can_be_off_only_in_image_text_runs() -> None:
    from mcl.config import config_from_dict
    from mcl.errors import ConfigError

    multimodal = {"objective": {"name": "clip"}, "multimodal": {"enabled": True}, "eval": {"linear_max_iter": 0}}
    assert config_from_dict(multimodal).eval.linear_max_iter == 0
    with pytest.raises(ConfigError, match="eval.linear_max_iter.*only in image-text runs"):
        config_from_dict({"eval": {"linear_max_iter": 0}})
