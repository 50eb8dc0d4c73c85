"""The MLP memory (Wei, Cao et al. 2025, arXiv 2508.01832): an attention-free MLP that reads the
frozen base model's hidden state at one block and predicts the next token.

Where the Memory Decoder is a small transformer that reads the tokens, the MLP memory reads the
base model's own representation of the context: the input of block `layer`'s MLP (after that
block's norm, as the datastore keys are read at the last block), by default about 70% of the way
up. A stack of pre-norm residual MLP blocks (the base's hidden size d, an inner width w, no
attention), a final norm and an output layer turn it into next-token logits. It starts either
from the base (`init="base"`: the final norm and output layer are copies of the base's and each
block's last projection is zero, so before training it predicts what the base's own output
layer reads at that block, as the decoder starts as a copy of the base's first block) or from
random weights (`init="scratch"`, as MLP Memory's code). It is trained on the same sparse kNN targets
with the same loss (core/loss.py) by the same loop (stages/training.py), and mixed with the
base like the decoder: p = α·p_MLP + (1−α)·p_base. Unlike the decoder it serves only the base
model whose hidden states it reads.

`MLPMemoryModel` is a Hugging Face model of its own (save_pretrained / from_pretrained hold
only the MLP's weights); `attach(base)` gives it the base model to read, which stays frozen and
outside its parameters, so an optimizer, a checkpoint or `count_parameters` sees the MLP alone.
Called on token ids it runs the base up to block `layer` (the rest of the base is skipped) and
returns `.logits` like any causal LM, so scoring and training need no special case.
`matched_width` chooses w so that its parameter count matches the Memory Decoder's, for a fair
comparison.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.activations import ACT2FN
from transformers.modeling_outputs import CausalLMOutput

from .keys import key_dim
from .models import backbone, position_limit, transformer_blocks

MODEL_TYPE = "memdec-mlp-memory"
DEPTH_SHARE = 0.7  # the default block: this share of the way up the base (MLP Memory's choice)
INITS = ("base", "scratch")


class MLPMemoryConfig(PretrainedConfig):
    """The MLP memory's shape: width (the base's hidden size), inner width, blocks, vocabulary,
    and which block of which base it reads (`layer`, `base_model`)."""

    model_type = MODEL_TYPE

    def __init__(self, vocab_size: int = 2, n_embd: int = 1, n_inner: int = 1, n_layer: int = 1,
                 layer: int = 0, n_positions: int | None = None, base_model: str = "",
                 layer_norm_epsilon: float = 1e-5, activation_function: str = "gelu_new",
                 initializer_range: float = 0.02, **kwargs: Any) -> None:
        self.vocab_size, self.n_embd, self.n_inner, self.n_layer = vocab_size, n_embd, n_inner, n_layer
        self.layer, self.n_positions, self.base_model = layer, n_positions, base_model
        self.layer_norm_epsilon, self.activation_function = layer_norm_epsilon, activation_function
        self.initializer_range = initializer_range
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)


class MLPBlock(nn.Module):
    """x + W2·act(W1·norm(x)): a transformer block without its attention."""

    def __init__(self, config: MLPMemoryConfig) -> None:
        super().__init__()
        width, inner = config.n_embd, config.n_inner
        self.ln = nn.LayerNorm(width, eps=config.layer_norm_epsilon)
        self.fc = nn.Linear(width, inner)
        self.proj = nn.Linear(inner, width)
        self.act = ACT2FN[config.activation_function]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(self.act(self.fc(self.ln(x))))


class _Stop(Exception):
    """Raised by the hook once the hidden state is read: the blocks above it are not run."""


class MLPMemoryModel(PreTrainedModel):
    """The MLP memory: [.., d] hidden states -> [.., vocab] logits (`memory_logits`), or token
    ids -> `.logits` through the attached base model (`forward`)."""

    config_class = MLPMemoryConfig
    base_model_prefix = "mlp_memory"
    _no_split_modules: tuple[str, ...] = ()

    def __init__(self, config: MLPMemoryConfig) -> None:
        super().__init__(config)
        width = config.n_embd
        self.blocks = nn.ModuleList(MLPBlock(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(width, eps=config.layer_norm_epsilon)
        self.lm_head = nn.Linear(width, config.vocab_size, bias=False)
        self._base: list[Any] = []  # the base model, kept out of the module tree (frozen)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2's initialisation: normal(0, 0.02) matrices, zero biases, unit norms."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def attach(self, base_model: Any) -> MLPMemoryModel:
        """Read the hidden states of `base_model` (frozen; not one of this model's parameters)."""
        check_base(self.config, base_model)
        self._base[:] = [base_model.eval()]  # run without gradients (see read_hidden)
        return self

    @property
    def base(self) -> Any:
        if not self._base:
            raise ValueError("the MLP memory has no base model to read: call attach(base_model) "
                             "with the base model it was trained on")
        return self._base[0]

    def memory_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., vocab] logits from the base's hidden states [..., d]."""
        x = hidden.to(self.lm_head.weight.dtype)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def train(self, mode: bool = True) -> MLPMemoryModel:
        super().train(mode)
        if self._base:
            self._base[0].eval()  # the base stays frozen, dropout off
        return self

    def forward(self, input_ids: torch.Tensor, use_cache: bool = False, **_: Any) -> CausalLMOutput:
        """Logits [B, T, V] for every position of `input_ids` [B, T] (the base is run up to
        block `layer`, without gradients)."""
        hidden = read_hidden(self.base, input_ids, self.config.layer)
        return CausalLMOutput(logits=self.memory_logits(hidden.to(self.lm_head.weight.device)))


AutoConfig.register(MODEL_TYPE, MLPMemoryConfig, exist_ok=True)
AutoModelForCausalLM.register(MLPMemoryConfig, MLPMemoryModel, exist_ok=True)


@torch.no_grad()
def read_hidden(base_model: Any, input_ids: torch.Tensor, layer: int) -> torch.Tensor:
    """[B, T, d]: the input of block `layer`'s MLP (after its norm) in `base_model`; the
    blocks above it are not run."""
    box: dict[str, torch.Tensor] = {}

    def grab(module: nn.Module, args: tuple, kwargs: dict) -> None:
        box["hidden"] = args[0] if args else next(iter(kwargs.values()))
        raise _Stop

    blocks = transformer_blocks(base_model)
    handle = blocks[layer].mlp.register_forward_pre_hook(grab, with_kwargs=True)
    device = next(base_model.parameters()).device
    try:
        backbone(base_model)(input_ids=input_ids.to(device), use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    return box["hidden"]


def default_layer(blocks: int) -> int:
    """The block about DEPTH_SHARE of the way up a base of `blocks` blocks (MLP Memory reads
    ~70%): block int(0.7·n), at most the last one."""
    return min(blocks - 1, int(DEPTH_SHARE * blocks))


def check_base(config: MLPMemoryConfig, base_model: Any) -> None:
    """ValueError unless `base_model` has block `layer` and the hidden size and vocabulary the
    MLP memory was built for."""
    blocks = transformer_blocks(base_model)
    if not hasattr(blocks[0], "mlp"):
        raise ValueError(f"{type(base_model).__name__}: the MLP memory reads a block's MLP input "
                         "(GPT-2 style transformer.h[i].mlp or Llama style model.layers[i].mlp)")
    if not 0 <= config.layer < len(blocks):
        raise ValueError(f"mlp_memory_layer={config.layer} but the base model has {len(blocks)} "
                         f"blocks: use 0..{len(blocks) - 1} (None: about {DEPTH_SHARE:.0%} up)")
    vocab = base_model.get_output_embeddings().weight.shape[0]
    if key_dim(base_model) != config.n_embd or vocab != config.vocab_size:
        raise ValueError(f"the MLP memory reads hidden states of width {config.n_embd} and "
                         f"predicts {config.vocab_size} tokens, but the base model has width "
                         f"{key_dim(base_model)} and {vocab} tokens: it must be the base model "
                         "the MLP memory was built for")


# --- size ------------------------------------------------------------------------------------

def mlp_memory_parameters(width: Any, hidden: int, vocab: int, blocks: int) -> Any:
    """Parameters of an MLP memory of inner width `width` (an int, or an array of widths) over
    hidden states of size `hidden`: `blocks` blocks (norm, W1 and W2 with biases), the final
    norm, the output layer (no bias)."""
    w = np.asarray(width, dtype=np.int64)
    block = 2 * hidden + (hidden * w + w) + (w * hidden + hidden)
    total = blocks * block + 2 * hidden + hidden * vocab
    return int(total) if total.ndim == 0 else total


def matched_width(target_params: int, hidden: int, vocab: int, blocks: int) -> int:
    """The inner width whose MLP memory's parameter count is closest to `target_params` (e.g. the
    Memory Decoder's), the smaller width on a tie."""
    if blocks < 1:
        raise ValueError(f"mlp_memory_blocks={blocks} must be >= 1")
    smallest = mlp_memory_parameters(1, hidden, vocab, blocks)
    if target_params < smallest:
        raise ValueError(f"target_params={target_params:,} is below the smallest MLP memory "
                         f"({smallest:,} parameters at width 1: its {vocab}-token output layer "
                         f"alone has {hidden * vocab:,})")
    per_unit = blocks * (2 * hidden + 1)  # parameters of one more inner unit in every block
    widths = np.arange(1, (target_params - smallest) // per_unit + 3)
    gap = np.abs(mlp_memory_parameters(widths, hidden, vocab, blocks) - target_params)
    return int(widths[np.argmin(gap)])


def build_mlp_memory(base_model: Any, width: int, blocks: int, layer: int | None = None,
                     seed: int = 0, init: str = "base") -> MLPMemoryModel:
    """An MLP memory of inner width `width` and `blocks` blocks reading block `layer` (None:
    about 70% up) of `base_model`, attached to it: seeded random weights (the global RNG
    untouched), and with init="base" the final norm and output layer copied from the base and
    each block's last projection zero (it starts as the base's output layer read at `layer`)."""
    if width < 1 or blocks < 1:
        raise ValueError(f"an MLP memory needs width >= 1 and blocks >= 1, got {width} and {blocks}")
    if init not in INITS:
        raise ValueError(f"mlp_memory_init={init!r}: use one of {INITS}")
    depth = len(transformer_blocks(base_model))
    config = MLPMemoryConfig(
        vocab_size=int(base_model.get_output_embeddings().weight.shape[0]),
        n_embd=key_dim(base_model), n_inner=int(width), n_layer=int(blocks),
        layer=default_layer(depth) if layer is None else int(layer),
        n_positions=position_limit(base_model),
        base_model=str(getattr(base_model.config, "_name_or_path", "")),
        layer_norm_epsilon=float(getattr(base_model.config, "layer_norm_epsilon", 1e-5)),
        bos_token_id=getattr(base_model.config, "bos_token_id", None),
        eos_token_id=getattr(base_model.config, "eos_token_id", None))
    check_base(config, base_model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MLPMemoryModel(config)
    if init == "base":
        start_from_base(model, base_model)
    return model.attach(base_model).float().train()


@torch.no_grad()
def start_from_base(model: MLPMemoryModel, base_model: Any) -> None:
    """Copy the base's final norm and output layer into `model` and zero each block's last
    projection: the untrained memory predicts softmax(head(norm(hidden at its block)))."""
    norm = getattr(backbone(base_model), "ln_f", None) or getattr(backbone(base_model), "norm", None)
    if not isinstance(norm, nn.LayerNorm):
        raise ValueError(f"mlp_memory_init='base' copies a LayerNorm final norm (GPT-2 style); "
                         f"{type(base_model).__name__} has {type(norm).__name__}: use 'scratch'")
    model.ln_f.load_state_dict(norm.state_dict())
    model.lm_head.weight.copy_(base_model.get_output_embeddings().weight)
    for block in model.blocks:
        block.proj.weight.zero_()
        block.proj.bias.zero_()
