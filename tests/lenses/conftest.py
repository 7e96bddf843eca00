"""Tiny real models for the lens tests: built from configs, saved with ``save_pretrained`` and loaded
through ``spex.models.load`` (the real loading code). Seeded; built once per session.

Tokenizers are built here too (no download): a byte-level BPE trained on a small corpus for the causal
LMs (with a ChatML chat template, as SmolLM2 has) and a WordPiece vocabulary for BERT.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

CORPUS = [
    "The food was not bad at all, but the service was slow.",
    "I expected to hate the movie, yet I loved every minute of it.",
    "The capital of France is Paris. The capital of Italy is Rome.",
    "Good but too long. Not good, not terrible. Never again!",
    "What is the answer? The answer is yes, and the reason is simple.",
    "She said the hotel was clean and quiet; he said it was noisy.",
] * 4
# Random init at the usual 0.02 gives near-uniform outputs; a wider init makes masks move values visibly.
INIT = 0.25
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def bpe_tokenizer():
    """Byte-level BPE (GPT-2/SmolLM2 style) with ChatML special tokens and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def wordpiece_tokenizer():
    """A lower-casing WordPiece tokenizer (BERT style) over the corpus's words."""
    import re

    from transformers import BertTokenizer

    words = sorted({w for line in CORPUS for w in re.findall(r"\w+|[^\w\s]", line.lower())})
    letters = sorted({c for w in words for c in w})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + [f"##{c}" for c in letters if c not in words]
    return BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})


def _save(model, tokenizer, folder: Path) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def lens_data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("spex-data")


@pytest.fixture(autouse=True)
def _spex_data_dir(lens_data_dir, monkeypatch):
    """Everything spex writes (digest cache, converted models) goes to a per-session temp dir."""
    monkeypatch.setenv("SPEX_DATA_DIR", str(lens_data_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = bpe_tokenizer()
    tok.chat_template = None  # a base model like the original GPT-2: prompts are scored as plain text
    cfg = GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=32, n_layer=2, n_head=4, initializer_range=INIT,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return _save(GPT2LMHeadModel(cfg), tok, tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory) -> Path:
    """Llama with grouped-query attention: 4 query heads share 2 key/value heads (like SmolLM2's 9/3)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    tok = bpe_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256,
                      tie_word_embeddings=False, initializer_range=INIT, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    return _save(LlamaForCausalLM(cfg), tok, tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory) -> Path:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(2)
    folder = tmp_path_factory.mktemp("bert")
    tok = wordpiece_tokenizer()
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=128, num_labels=2, initializer_range=INIT,
                     id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    return _save(BertForSequenceClassification(cfg), tok, folder)


@pytest.fixture(scope="session")
def gpt2(gpt2_dir):
    from spex.models import load

    return load(gpt2_dir, device="cpu")


@pytest.fixture(scope="session")
def llama(llama_dir):
    from spex.models import load

    return load(llama_dir, device="cpu")


@pytest.fixture(scope="session")
def bert(bert_dir):
    from spex.models import load

    return load(bert_dir, device="cpu")
