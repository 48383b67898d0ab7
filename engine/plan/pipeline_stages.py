"""Pipeline-parallel stages as vLLM 0.32 builds them: each stage's decoder layers and which vocabulary matrices it holds."""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.errors import QuantTuiError
from engine.model.param_count import ceil_div

# vocab_parallel_embedding.DEFAULT_VOCAB_PADDING_SIZE: embedding and lm_head rows are padded to it.
VOCAB_PADDING = 64

# vLLM's override of the default split (``distributed/utils.py::get_pp_indices``): layers per stage, "4,4,5,3".
LAYER_PARTITION_ENV = "VLLM_PP_LAYER_PARTITION"


@dataclass(frozen=True, slots=True)
class PipelineStage:
    """One pipeline stage; all its tensor-parallel ranks hold the same share.

    Attributes:
        rank: the stage's pipeline rank (0 is the first).
        layers: its decoder layers, ``range(start, end)`` as ``get_pp_indices`` returns them.
        holds_embedding: builds ``embed_tokens``: the first stage, and the last one too when the
            embeddings are tied (llama.py, qwen2.py: the last rank ties its lm_head to its own copy).
        holds_lm_head: builds the lm_head and the final norm and runs the sampler: the last stage.
        tie_word_embeddings: whether the lm_head is the embedding matrix.
    """

    rank: int
    layers: range
    holds_embedding: bool
    holds_lm_head: bool
    tie_word_embeddings: bool

    @property
    def vocab_matrices(self) -> int:
        """Vocabulary × hidden matrices in this stage's memory (a tied lm_head shares its stage's embedding)."""
        held = int(self.holds_embedding) + int(self.holds_lm_head)
        return 1 if self.tie_word_embeddings and held == 2 else held


def layer_partition(
    num_layers: int, pipeline_parallel_size: int, override: tuple[int, ...] | None = None
) -> tuple[int, ...]:
    """Decoder layers per stage, as ``get_pp_indices`` splits them.

    ``num_layers // P`` each, the remainder one each to the stages before the last, counting back
    from the second-to-last (vLLM keeps the last stage, which holds the norm and lm_head, light);
    ``override`` is a checked ``VLLM_PP_LAYER_PARTITION`` and wins.
    """
    if override is not None:
        return override
    partition = [num_layers // pipeline_parallel_size] * pipeline_parallel_size
    for back in range(2, num_layers % pipeline_parallel_size + 2):
        partition[-back] += 1
    return tuple(partition)


def parse_layer_partition(text: str) -> tuple[int, ...]:
    """Reads a ``VLLM_PP_LAYER_PARTITION`` value ("27,27,26") as vLLM does (``int()`` of each part).

    Raises:
        QuantTuiError: not comma-separated whole numbers, or one under 1 (checked against a model's
            layers and stages by ``check_layer_partition``).
    """
    try:
        partition = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise QuantTuiError(
            f"{LAYER_PARTITION_ENV}={text!r} is not a comma-separated list of layer counts",
            'set it to one count per pipeline stage, like "27,27,26", or unset it',
        ) from None
    if min(partition) < 1:
        raise QuantTuiError(
            f"{LAYER_PARTITION_ENV}={text!r} leaves a pipeline stage without layers",
            "give every stage at least one layer, or unset it",
        )
    return partition


def check_layer_partition(
    partition: tuple[int, ...], num_layers: int, pipeline_parallel_size: int
) -> tuple[int, ...]:
    """``partition`` as ``get_pp_indices`` takes it: one count per stage, summing to the model's layers.

    vLLM checks it on every plan, one stage included (it would stop at start-up, after loading).

    Raises:
        QuantTuiError: the counts do not match, with the default split to set instead.
    """
    if len(partition) != pipeline_parallel_size or sum(partition) != num_layers or min(partition) < 1:
        text = ",".join(map(str, partition))
        stages = (
            "its one pipeline stage"
            if pipeline_parallel_size == 1
            else f"each of the {pipeline_parallel_size} pipeline stages"
        )
        raise QuantTuiError(
            f"{LAYER_PARTITION_ENV}={text!r} must give {stages} at least one layer, {num_layers} in all",
            f'set it like "{",".join(map(str, layer_partition(num_layers, pipeline_parallel_size)))}" or unset it',
        )
    return partition


def pipeline_stages(
    num_layers: int,
    pipeline_parallel_size: int,
    tie_word_embeddings: bool,
    partition: tuple[int, ...] | None = None,
) -> tuple[PipelineStage, ...]:
    """The stages vLLM builds for ``pipeline_parallel_size`` (one stage holding everything when it is 1)."""
    counts = layer_partition(num_layers, pipeline_parallel_size, partition)
    stages: list[PipelineStage] = []
    start = 0
    for rank, count in enumerate(counts):
        last = rank == len(counts) - 1
        embedding = rank == 0 or (tie_word_embeddings and last)
        stages.append(PipelineStage(rank, range(start, start + count), embedding, last, tie_word_embeddings))
        start += count
    return tuple(stages)


@dataclass(frozen=True, slots=True)
class VocabMatrices:
    """The embedding and lm_head matrices' bytes, as the checkpoint stores them and as vLLM allocates them.

    Attributes:
        embedding: ``embed_tokens`` as stored (vocab_size rows).
        lm_head: the lm_head as stored; the embedding's own bytes when tied.
        padded_embedding: ``embed_tokens`` with the rows vLLM pads to a multiple of 64.
        padded_lm_head: the lm_head with its padded rows.
        tied: whether the lm_head is the embedding matrix (stored once).
    """

    embedding: int
    lm_head: int
    padded_embedding: int
    padded_lm_head: int
    tied: bool

    @property
    def stored(self) -> int:
        """Bytes of the vocabulary matrices in the checkpoint's weights (a tied lm_head is not stored)."""
        return self.embedding + (0 if self.tied else self.lm_head)

    def held_by(self, stage: PipelineStage) -> int:
        """Bytes of the vocabulary matrices ``stage`` allocates (``PipelineStage.vocab_matrices`` of them)."""
        embedding = self.padded_embedding if stage.holds_embedding else 0
        # A tied lm_head on a stage that builds embed_tokens is that matrix (tie_weights).
        shares = self.tied and stage.holds_embedding
        return embedding + (self.padded_lm_head if stage.holds_lm_head and not shares else 0)


def vocab_matrices(
    vocab_size: int,
    hidden_size: int,
    tie_word_embeddings: bool,
    dtype_bytes: int = 2,
    stored_bits: tuple[float, float] | None = None,
) -> VocabMatrices:
    """The vocabulary matrices' bytes at the serving dtype, or at the bits a GGUF file keeps them in.

    ``VocabParallelEmbedding`` and ``ParallelLMHead`` pad their rows to a multiple of 64
    (``pad_vocab_size``). ``stored_bits`` is (embed_tokens, lm_head) bits per weight for a checkpoint
    that keeps them quantized: the GGUF plugin's ``GGUFEmbeddingMethod`` keeps the file's blocks and
    dequantizes only the rows it looks up, and its ``_gguf_embedding_weight_loader`` allocates the padded
    rows in the file's type (``tensor_shape`` is the partition's padded rows). A tied model's one
    matrix takes the lm_head's bits: llama.cpp quantizes a ``token_embd`` that stands in for the missing
    ``output`` tensor as it would quantize ``output`` (``llama_tensor_get_type``).
    """
    padded_rows = ceil_div(vocab_size, VOCAB_PADDING) * VOCAB_PADDING
    embedding_bits, lm_head_bits = stored_bits or (8.0 * dtype_bytes, 8.0 * dtype_bytes)
    if tie_word_embeddings:
        embedding_bits = lm_head_bits
    embedding_row = math.ceil(hidden_size * embedding_bits / 8)
    lm_head_row = math.ceil(hidden_size * lm_head_bits / 8)
    return VocabMatrices(
        vocab_size * embedding_row,
        vocab_size * lm_head_row,
        padded_rows * embedding_row,
        padded_rows * lm_head_row,
        tie_word_embeddings,
    )
