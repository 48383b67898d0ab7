"""GGUF checkpoints read from their tensor tables: sizes, parameters, layers and the plan's weight bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import ModelError
from engine.hardware.detect import target_from_spec
from engine.model.gguf_file import gguf_model_files, gguf_type_name
from engine.model.inspect_model import inspect_model
from engine.model.reference import resolve_model
from engine.plan.memory import stage_weights_bytes, weight_bytes
from engine.plan.pipeline_stages import pipeline_stages
from engine.plan.recommender import PlanRequest, recommend
from tests.fixtures.tiny_gguf import LAYERS, write_config, write_gguf

# By hand (ggml's block sizes): Q8_0 keeps 32 weights in 34 B (32 int8 + an f16 scale), Q4_0 in 18 B
# (16 B of nibbles + an f16 scale): 8.5 and 4.5 bits. A row of 256 is 8 blocks: 272 B in Q8_0, 144 B
# in Q4_0. token_embd 64 x 256 Q8_0 = 17,408 B; output 64 x 256 Q4_0 = 9,216 B; output_norm F32 1,024 B.
# One layer: two F32 norms 2,048 + attn_q 256 x 144 = 36,864 + attn_k, attn_v 128 x 144 = 18,432 each
# + attn_output 36,864 + ffn_gate, ffn_up 512 x 144 = 73,728 each + ffn_down F16 256 x 512 x 2
# = 262,144: 522,240 B. Two layers and the rest: 1,044,480 + 27,648 = 1,072,128 B.
LAYER_BYTES = 522_240
FILE_BYTES = 1_072_128
# Parameters: a layer's Linear weights 65,536 + 32,768 + 32,768 + 65,536 + 3 x 131,072 = 589,824,
# plus 512 norm weights = 590,336; the model: 2 x 590,336 + 2 x 16,384 (embedding, output) + 256.
LAYER_PARAMS, LAYER_LINEAR = 590_336, 589_824
PARAMS = 1_213_696


@pytest.fixture
def gguf_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "llama-q4_0"
    write_config(folder)
    write_gguf(folder / "llama-Q4_0.gguf")
    return folder


def test_a_gguf_folder_is_sized_from_its_tensor_table(gguf_folder: Path) -> None:
    info = inspect_model(gguf_folder)
    assert info.quantization is not None
    assert (info.quantization.method, info.quantization.scheme, info.quantization.recommend_as) == (
        "gguf",
        "GGUF Q4_0",
        "gguf",
    )
    assert info.params_source == "gguf"
    assert (info.weight_bytes, info.loaded_weight_bytes) == (FILE_BYTES, FILE_BYTES)
    assert (info.params, info.linear_params) == (PARAMS, 2 * LAYER_LINEAR)
    # Output rows: attn_q 256 + k, v 128 each + attn_output 256 + gate, up 512 each + down 256, twice.
    assert info.linear_out_features == 2 * 2_048
    assert info.layer_params == (LAYER_PARAMS, LAYER_PARAMS)
    assert info.layer_linear_params == (LAYER_LINEAR, LAYER_LINEAR)
    assert info.layer_bytes == (LAYER_BYTES, LAYER_BYTES)
    assert info.vocab_bits == (8.5, 4.5)
    assert not info.tie_word_embeddings
    assert info.dtype_params == {
        "Q8_0": 16_384,
        "Q4_0": 16_384 + 2 * 458_752,
        "F32": 256 + 2 * 512,
        "F16": 2 * 131_072,
    }


def test_the_plan_serves_a_gguf_checkpoint_at_its_own_bytes(gguf_folder: Path) -> None:
    # Before GGUF tables were read, a folder with config.json and a .gguf was planned at its 16-bit size.
    info = inspect_model(gguf_folder)
    weights = weight_bytes(info, "gguf")
    assert weights.total == FILE_BYTES
    assert weights.vocab_bits == (8.5, 4.5)
    # 16-bit part: the 1,280 norm weights at 2 B (the vocabulary matrices are in the quantized bytes).
    assert weights.unquantized == 2_560
    # P 2: the decoder is 1,072,128 - 26,624 (token_embd + output) - 512 (final norm, hidden x 2 B)
    # = 1,044,992 B, halved by the two equal layers: 522,496 each; the first stage adds token_embd,
    # the last the output matrix and the final norm.
    first, last = (stage_weights_bytes(info, weights, stage) for stage in pipeline_stages(LAYERS, 2, False))
    assert (first, last) == (522_496 + 17_408, 522_496 + 9_216 + 512)


def test_a_split_gguf_set_is_one_model_and_an_mmproj_file_is_no_second(tmp_path: Path) -> None:
    for name in ("m-00001-of-00002.gguf", "m-00002-of-00002.gguf", "mmproj-m-f16.gguf"):
        (tmp_path / name).write_bytes(b"")
    assert [path.name for path in gguf_model_files(tmp_path)] == [
        "m-00001-of-00002.gguf",
        "m-00002-of-00002.gguf",
    ]


@pytest.mark.parametrize("content", [b"GGUF", b"not a gguf file at all"])
def test_an_unreadable_gguf_file_is_one_line(tmp_path: Path, content: bytes) -> None:
    write_config(tmp_path)
    (tmp_path / "m.gguf").write_bytes(content)
    with pytest.raises(ModelError, match=r"m.gguf is not a readable GGUF file .*download it again"):
        inspect_model(tmp_path)


def test_a_truncated_gguf_file_is_one_line(gguf_folder: Path) -> None:
    path = gguf_folder / "llama-Q4_0.gguf"
    path.write_bytes(path.read_bytes()[: FILE_BYTES // 2])
    with pytest.raises(ModelError, match="is not a readable GGUF file"):
        inspect_model(gguf_folder)


def test_layers_past_the_decoder_are_mtp_and_not_loaded(tmp_path: Path) -> None:
    # A third blk (GLM-4.5's GGUF keeps its nextn layer as blk.N) while config.json says 2 layers.
    write_config(tmp_path)
    write_gguf(tmp_path / "m.gguf", layers=3, file_type=None)
    info = inspect_model(tmp_path)
    assert info.quantization is not None and info.quantization.scheme == "GGUF"
    assert (info.params, info.mtp_params) == (PARAMS, LAYER_PARAMS)
    assert (info.weight_bytes, info.loaded_weight_bytes) == (FILE_BYTES + LAYER_BYTES, FILE_BYTES)


def test_a_single_file_gguf_is_served_as_the_file_with_its_folders_tokenizer(gguf_folder: Path) -> None:
    # vLLM's GGUF docs: `vllm serve ./model-Q4_K_M.gguf --tokenizer <the base model>`.
    (gguf_folder / "tokenizer_config.json").write_text("{}", encoding="utf-8")
    top = recommend(
        inspect_model(gguf_folder), target_from_spec("H100"), PlanRequest(max_model_len=2048)
    ).best
    assert top.method == "gguf"
    argv = top.server.vllm_args("cuda")
    assert argv[:5] == [
        "vllm",
        "serve",
        str(gguf_folder / "llama-Q4_0.gguf"),
        "--tokenizer",
        str(gguf_folder),
    ]


def test_a_split_gguf_set_is_refused_with_the_merge_command(tmp_path: Path) -> None:
    write_config(tmp_path)
    for part in (1, 2):
        write_gguf(tmp_path / f"m-0000{part}-of-00002.gguf")
    with pytest.raises(ModelError) as refused:
        recommend(inspect_model(tmp_path), target_from_spec("H100"))
    assert str(refused.value) == (
        "m: vLLM loads a GGUF model from one file and this one is split in 2; merge them first "
        "(llama.cpp: llama-gguf-split --merge m-00001-of-00002.gguf merged.gguf)"
    )


def test_a_lone_gguf_file_gives_its_own_config_as_vllm_reads_it(tmp_path: Path) -> None:
    # llama.cpp repos ship no config.json: transformers reads block_count, embedding_length, ... from
    # the file's metadata, and the plan is the one the config.json folder gets.
    write_gguf(tmp_path / "m-Q4_0.gguf", metadata=True)
    info = inspect_model(tmp_path)
    assert (info.architecture, info.num_layers, info.hidden_size, info.vocab_size) == (
        "LlamaForCausalLM",
        2,
        256,
        64,
    )
    assert (info.num_kv_heads, info.head_dim, info.tie_word_embeddings) == (2, 64, False)
    assert (info.params, info.loaded_weight_bytes, info.layer_bytes) == (
        PARAMS,
        FILE_BYTES,
        (LAYER_BYTES,) * 2,
    )
    top = recommend(info, target_from_spec("H100"), PlanRequest(max_model_len=2048)).best
    # No tokenizer files beside it: vLLM converts the file's own (no --tokenizer), and the plan says so.
    served = top.server.vllm_args("cuda")
    assert served[:4] == ["vllm", "serve", str(tmp_path / "m-Q4_0.gguf"), "--quantization"]
    assert any(warning.startswith("no tokenizer beside the GGUF file") for warning in top.warnings)


def test_a_lone_gguf_file_without_model_metadata_is_one_line(tmp_path: Path) -> None:
    write_gguf(tmp_path / "m.gguf")
    with pytest.raises(ModelError) as refused:
        inspect_model(tmp_path)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("cannot read a model config from m.gguf (")
    assert message.endswith("put the original model's config.json beside the GGUF file")


@pytest.mark.parametrize(("all_q4_0", "warned"), [(False, False), (True, True)])
def test_the_4_bit_warning_follows_the_files_own_bits(tmp_path: Path, all_q4_0: bool, warned: bool) -> None:
    # The fixture keeps ffn_down F16: 1,072,128 B x 8 / 1,213,696 weights = 7.07 bits, no 4-bit file.
    # All Q4_0: each ffn_down is 256 x 288 B (512 weights per row, 16 blocks) = 73,728 B instead of
    # 262,144, so 1,072,128 - 2 x 188,416 = 695,296 B = 4.58 bits: warned as 4-bit.
    write_config(tmp_path)
    write_gguf(tmp_path / "m.gguf", all_q4_0=all_q4_0)
    info = inspect_model(tmp_path)
    assert info.loaded_weight_bytes == (695_296 if all_q4_0 else FILE_BYTES)
    top = recommend(info, target_from_spec("H100"), PlanRequest(max_model_len=2048)).best
    assert any(warning.startswith("4-bit weights cost more quality") for warning in top.warnings) is warned


def _cached_gguf_repo(hub: Path, files: tuple[str, ...]) -> Path:
    """A GGUF repo laid out the way huggingface_hub caches it (no config.json, as llama.cpp repos ship)."""
    repo = hub / "models--acme--tiny-GGUF"
    snapshot = repo / "snapshots" / ("b" * 40)
    for name in files:
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        write_gguf(snapshot / name, metadata=True)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("b" * 40)
    return snapshot


def test_a_repo_id_with_a_type_picks_that_gguf_file_as_vllm_does(tmp_path: Path) -> None:
    # vLLM: `vllm serve unsloth/Qwen3-0.6B-GGUF:Q4_K_M`; Q4_K must not take Q4_K_M's file.
    names = ("tiny-Q4_K_M.gguf", "tiny-Q4_K.gguf", "Q8_0/tiny-Q8_0-00001-of-00002.gguf")
    snapshot = _cached_gguf_repo(tmp_path / "hub", names)
    for file_type, expected in (("Q4_K_M", names[0]), ("q4_k", names[1]), ("Q8_0", names[2])):
        assert resolve_model(f"acme/tiny-GGUF:{file_type}", cache_dir=tmp_path / "hub") == snapshot / expected
    with pytest.raises(
        ModelError, match=r"holds 2 GGUF models .*; pass the one to serve: --model acme/tiny-GGUF:Q4_K$"
    ):
        inspect_model(resolve_model("acme/tiny-GGUF", cache_dir=tmp_path / "hub"))
    with pytest.raises(ModelError) as missing:
        resolve_model("acme/tiny-GGUF:Q6_K", cache_dir=tmp_path / "hub")
    assert str(missing.value) == (
        f"no Q6_K GGUF file in {snapshot}; the types there: Q4_K, Q4_K_M, Q8_0; pick one of them after the ':', "
        "or download it first (hf download REPO --include '*Q6_K*')"
    )


def test_a_gguf_file_among_several_types_is_its_own_model(tmp_path: Path) -> None:
    write_config(tmp_path)
    write_gguf(tmp_path / "tiny-Q4_0.gguf")
    write_gguf(tmp_path / "tiny-Q8_0.gguf", all_q4_0=True)
    with pytest.raises(
        ModelError, match=f"holds 2 GGUF models .*; pass the one to serve: --model {tmp_path}/tiny-Q4_0.gguf"
    ):
        inspect_model(tmp_path)
    chosen = inspect_model(resolve_model(str(tmp_path / "tiny-Q8_0.gguf")))
    assert (chosen.name, chosen.path, chosen.gguf_files) == (
        "tiny-Q8_0",
        tmp_path,
        (tmp_path / "tiny-Q8_0.gguf",),
    )
    assert chosen.loaded_weight_bytes == 695_296  # the all-Q4_0 file's bytes (test above), not the other's


def test_a_gguf_link_in_the_hugging_face_cache_keeps_its_name(tmp_path: Path) -> None:
    # huggingface_hub's snapshot holds a link named after the file; its blob (a hash) has no suffix.
    snapshot = _cached_gguf_repo(tmp_path / "hub", ("tiny-Q4_K_M.gguf",))
    blob = tmp_path / "hub" / "models--acme--tiny-GGUF" / "blobs" / "0123abcd"
    blob.parent.mkdir(parents=True)
    (snapshot / "tiny-Q4_K_M.gguf").rename(blob)
    (snapshot / "tiny-Q4_K_M.gguf").symlink_to(blob)
    resolved = resolve_model(str(snapshot / "tiny-Q4_K_M.gguf"))
    assert resolved == snapshot / "tiny-Q4_K_M.gguf"
    assert inspect_model(resolved).loaded_weight_bytes == FILE_BYTES


@pytest.mark.parametrize("kept", [100, 2_000])
def test_a_truncated_lone_gguf_file_is_one_line(tmp_path: Path, kept: int) -> None:
    # No config.json: the file is read before transformers parses its metadata (struct.error there).
    write_gguf(tmp_path / "m.gguf", metadata=True)
    (tmp_path / "m.gguf").write_bytes((tmp_path / "m.gguf").read_bytes()[:kept])
    with pytest.raises(ModelError, match=r"m.gguf is not a readable GGUF file .*download it again"):
        inspect_model(tmp_path)


@pytest.mark.parametrize(
    ("name", "file_type"),
    [
        ("Qwen3-8B-Q4_K_M.gguf", "Q4_K_M"),
        ("llama-2-7b.Q4_K_M.gguf", "Q4_K_M"),  # TheBloke's names
        ("gemma-3-27b-it-IQ3_XXS-00001-of-00002.gguf", "IQ3_XXS"),
        ("phi-4-BF16.gguf", "BF16"),
    ],
)
def test_the_type_is_read_from_the_end_of_the_name(name: str, file_type: str) -> None:
    assert gguf_type_name(Path(name)) == file_type


def test_the_serve_screen_serves_the_gguf_file_not_its_folder(gguf_folder: Path) -> None:
    from tui.screens.serve import serve_folder
    from tui.state import Selection

    model = inspect_model(gguf_folder)
    assert serve_folder(Selection(model=model)) == gguf_folder / "llama-Q4_0.gguf"
