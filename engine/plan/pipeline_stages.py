"""Pipeline-parallel stages as vLLM 0.32 builds them: each stage's decoder layers and which vocabulary matrices it holds."""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import QuantTuiError

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
