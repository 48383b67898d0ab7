"""vLLM's own vision towers and projectors, built on the meta device in a child process: their parameter counts.

The child sets up the one-rank process group vLLM's parallel layers need; each count is of a module's state dict,
what vLLM's weight loader fills.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from engine.serve.ports import pick_free_port

# Marks the child's answers among vLLM's own log lines on stdout.
_REPLY = "meta-build reply: "
# The first call waits for vLLM's import too.
_REPLY_TIMEOUT_S = 300

_BUILD = """
import importlib.abc, importlib.machinery, importlib.util, json, re, sys, traceback, types, torch
from types import SimpleNamespace
# glm4_1v.py (through qwen2_vl.py too), mllama4.py and lfm2_vl.py import transformers' image and video processors, which import torchvision
# (removed from this venv: the CPU wheel pulls a CUDA build). Building a tower uses none of them, so without
# torchvision those modules are served as stand-ins whose every name is an empty class.
def _stand_in_class(attribute):
    if attribute.startswith("__"):
        raise AttributeError(attribute)
    return type(attribute, (), {})
class _ProcessorStandIns(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    PATTERN = re.compile(
        r"transformers[.]models[.](glm4v|qwen2_vl|llama4|lfm2_vl)[.](image|video)_processing_(glm4v|qwen2_vl|llama4|lfm2_vl)$"
    )
    def find_spec(self, name, path=None, target=None):
        return importlib.machinery.ModuleSpec(name, self) if self.PATTERN.match(name) else None
    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__getattr__ = _stand_in_class
        return module
    def exec_module(self, module):
        pass
if importlib.util.find_spec("torchvision") is None:
    sys.meta_path.insert(0, _ProcessorStandIns())
from transformers import (
    CLIPVisionConfig, Glm4vTextConfig, Glm4vVisionConfig, Idefics3VisionConfig, Llama4VisionConfig, Qwen3VLVisionConfig,
    SiglipVisionConfig,
    Qwen3_5VisionConfig,
)
from transformers.models.qwen2_5_omni.configuration_qwen2_5_omni import (
    Qwen2_5OmniAudioEncoderConfig, Qwen2_5OmniVisionEncoderConfig,
)
from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniAudioEncoder
from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import (
    Qwen3OmniMoeAudioEncoderConfig, Qwen3OmniMoeVisionEncoderConfig,
)
from transformers.models.kimi_k25.configuration_kimi_k25 import Kimi_K25VisionConfig
from vllm.config import VllmConfig, set_current_vllm_config
from vllm.transformers_utils.configs.kimi_k3 import KimiK3VisionConfig
from vllm.transformers_utils.configs.moonvit import MoonViTConfig
from vllm.distributed import parallel_state
# vLLM's Attention keeps its k/v/q/prob scales as state, which no checkpoint of an unquantized model holds.
ATTENTION_SCALE = re.compile(r"[.]attn[.]_(k|v|q|prob)_scale$")
def weights(module):
    return sum(t.numel() for name, t in module.state_dict().items() if not ATTENTION_SCALE.search(name))
def drop_batch_norm_counters(module):
    # A BatchNorm's step counter is state, not a weight (its running mean and variance are).
    for norm in module.modules():
        if isinstance(norm, torch.nn.BatchNorm1d):
            norm._buffers.pop("num_batches_tracked", None)
def build(kind, fields, extra):
    if kind == "intern":
        config = SimpleNamespace(**fields, layer_norm_eps=1e-6, initializer_factor=0.1, hidden_act="gelu")
        module = InternVisionModel(config, num_hidden_layers_override=extra)
    elif kind == "clip":
        module = CLIPVisionModel(
            CLIPVisionConfig(**fields), num_hidden_layers_override=extra, require_post_norm=False
        )
    elif kind == "glm4v":
        module = Glm4vVisionTransformer(Glm4vTextConfig(), Glm4vVisionConfig(**fields))
    elif kind == "idefics3":
        module = Idefics3VisionTransformer(Idefics3VisionConfig(**fields))
    elif kind == "qwen3_vl":  # extra: the vision config class's model type, qwen3_vl or qwen3_5
        vision_class = Qwen3_5VisionConfig if extra == "qwen3_5" else Qwen3VLVisionConfig
        module = Qwen3_VisionTransformer(vision_class(**fields))
    elif kind == "llama4":  # the vision model and the projector; extra = the text hidden size
        vision = Llama4VisionConfig(**fields)
        module = torch.nn.ModuleList([
            Llama4VisionModel(vision),
            Llama4MultiModalProjector(
                SimpleNamespace(vision_config=vision, text_config=SimpleNamespace(hidden_size=extra))
            ),
        ])
    elif kind == "minicpmv":  # vpm and resampler; extra: (query_num, text hidden, drop_vision_last_layer)
        vision = SiglipVisionConfig(**fields)
        vpm = Idefics2VisionTransformer(vision, apply_encoder_attention_mask=True)
        if extra[2]:
            vpm.encoder.layers = vpm.encoder.layers[:-1]
        module = torch.nn.ModuleList([
            vpm,
            Resampler2_5(
                num_queries=extra[0], embed_dim=extra[1], num_heads=extra[1] // 128, kv_dim=vision.hidden_size
            ),
        ])
    elif kind == "qwen2_5_omni":  # fields: the vision config; extra: the audio config
        module = torch.nn.ModuleList([
            Qwen2_5_VisionTransformer(Qwen2_5OmniVisionEncoderConfig(**fields)),
            Qwen2_5OmniAudioEncoder(Qwen2_5OmniAudioEncoderConfig(**extra)),
        ])
    elif kind == "qwen3_omni":  # fields: the vision config; extra: the audio config
        from vllm.model_executor.models.qwen3_omni_moe_thinker import (
            Qwen3Omni_VisionTransformer, Qwen3OmniMoeAudioEncoder,
        )
        module = torch.nn.ModuleList([
            Qwen3Omni_VisionTransformer(Qwen3OmniMoeVisionEncoderConfig(**fields)),
            Qwen3OmniMoeAudioEncoder(Qwen3OmniMoeAudioEncoderConfig(**extra)),
        ])
    elif kind == "lfm2_vl":  # Siglip2Model and the projector; extra: the top-level fields and the text hidden size
        from transformers import Lfm2VlConfig
        from vllm.model_executor.models.lfm2_siglip2 import Siglip2Model
        from vllm.model_executor.models.lfm2_vl import Lfm2VLMultiModalProjector
        top, text_hidden = extra
        config = Lfm2VlConfig(vision_config=fields, text_config={"hidden_size": text_hidden}, **top)
        module = torch.nn.ModuleList([
            Siglip2Model(config.vision_config), Lfm2VLMultiModalProjector(config)
        ])
    elif kind == "radio":  # RadioModel; fields: vision_config["args"]; extra: vision_config's own patch and T
        from vllm.model_executor.models.radio import RadioModel
        from vllm.transformers_utils.configs.radio import RadioConfig
        module = RadioModel(RadioConfig(model_name=fields["model"], **extra, **fields))
        # The teachers' summary indices are a buffer the module fills itself, not a checkpoint weight.
        module._buffers.pop("summary_idxs", None)
    elif kind == "ernie_vl":  # the vision tower and the resampler; extra: the top-level fields the resampler reads
        from vllm.model_executor.models.ernie45_vl import (
            Ernie4_5_VisionTransformer, VariableResolutionResamplerModel,
        )
        top = SimpleNamespace(**extra)
        module = torch.nn.ModuleList([
            Ernie4_5_VisionTransformer(SimpleNamespace(**fields)),
            VariableResolutionResamplerModel(
                top.pixel_hidden_size, top.hidden_size, top.spatial_conv_size, top.temporal_conv_size, config=top
            ),
        ])
    elif kind == "phi4mm":  # Phi4MMImageEncoder and AudioEmbedding; fields: the top-level config keys they read
        from vllm.model_executor.models.phi4mm import Phi4MMImageEncoder
        from vllm.model_executor.models.phi4mm_audio import AudioEmbedding
        config = SimpleNamespace(**fields)
        module = torch.nn.ModuleList([
            Phi4MMImageEncoder(config, None), AudioEmbedding(config, **fields["embd_layer"]["audio_embd_layer"])
        ])
        drop_batch_norm_counters(module)
    elif kind == "ovis2_5":  # VisualTokenizer and the vte; fields: the vit config; extra: (visual vocab, text hidden)
        from vllm.model_executor.models.ovis import VisualEmbedding
        from vllm.model_executor.models.ovis2_5 import VisualTokenizer
        vit = {"layer_norm_eps": 1e-6, "attention_dropout": 0.0, "window_size": 112, "use_rope": True, **fields}
        module = torch.nn.ModuleList([
            VisualTokenizer(SimpleNamespace(**{"fullatt_block_indexes": None, **vit}), extra[0]),
            VisualEmbedding(*extra),
        ])
    elif kind == "interns1":  # InternS1VisionModel (interns1.py itself imports torchvision); fields: the vision config
        from transformers import InternVLVisionConfig
        from vllm.model_executor.models.interns1_vit import InternS1VisionModel
        module = InternS1VisionModel(InternVLVisionConfig(**fields))
    elif kind == "parakeet":  # ProjectedParakeet; fields: the sound config; extra: the text hidden size
        from transformers import PretrainedConfig
        from vllm.model_executor.models.parakeet import ProjectedParakeet
        module = ProjectedParakeet(
            PretrainedConfig(**fields), dtype=torch.bfloat16, llm_hidden_size=extra, max_model_len=4096
        )
        drop_batch_norm_counters(module)
    elif kind == "paligemma":  # the SigLIP tower and the projector; extra: projection_dim
        from vllm.model_executor.models.paligemma import PaliGemmaMultiModalProjector
        from vllm.model_executor.models.siglip import SiglipVisionModel
        vision = SiglipVisionConfig(**fields)
        module = torch.nn.ModuleList([
            SiglipVisionModel(vision), PaliGemmaMultiModalProjector(vision.hidden_size, extra)
        ])
    elif kind == "phi3v":  # Phi3HDImageEmbedding; fields: img_processor; extra: the text hidden size
        from vllm.model_executor.models.phi3v import Phi3HDImageEmbedding
        embd_layer = {"use_hd_transform": True, "with_learnable_separator": True}
        module = Phi3HDImageEmbedding(
            SimpleNamespace(hidden_size=extra, img_processor=fields, embd_layer=embd_layer), None
        )
    elif kind == "qwen2_audio":  # the encoder and the projector; extra: the text hidden size
        from transformers.models.qwen2_audio.configuration_qwen2_audio import Qwen2AudioEncoderConfig
        from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioEncoder
        from vllm.model_executor.models.qwen2_audio import Qwen2AudioMultiModalProjector
        audio = Qwen2AudioEncoderConfig(**fields)
        module = torch.nn.ModuleList([
            Qwen2AudioEncoder(audio), Qwen2AudioMultiModalProjector(audio.d_model, extra)
        ])
    elif kind == "kimi_vl":  # the MoonViT and the projector; extra = the text hidden size
        vision = MoonViTConfig(**fields)
        module = torch.nn.ModuleList([
            MoonVitPretrainedModel(vision),
            KimiVLMultiModalProjector(
                SimpleNamespace(vision_config=vision, text_config=SimpleNamespace(hidden_size=extra))
            ),
        ])
    elif kind == "moonvit_3d":  # extra: (the vision config class, kimi_k25 or kimi_k3; the text hidden size)
        vision = (KimiK3VisionConfig if extra[0] == "kimi_k3" else Kimi_K25VisionConfig)(**fields)
        module = torch.nn.ModuleList([
            MoonViT3dPretrainedModel(vision),
            KimiK25MultiModalProjector(vision, out_hidden_size=extra[1]),
        ])
    elif kind == "gemma3n_layers":  # every decoder layer of a Gemma3nTextConfig of fields, in order
        from transformers.models.gemma3n.configuration_gemma3n import Gemma3nTextConfig
        from vllm.model_executor.models.gemma3n import Gemma3nDecoderLayer
        text = Gemma3nTextConfig(**fields)
        # GeluAndMulSparse reads a statistic off a tensor at build time, which meta tensors cannot give; the
        # sparsity changes no parameter.
        text.activation_sparsity_pattern = [0.0] * text.num_hidden_layers
        # The attention layers ask the model config for a few facts; None (not set) for all but the dtype.
        model = type("ModelFacts", (SimpleNamespace,), {"__getattr__": lambda self, name: None})(dtype=torch.bfloat16)
        layers_config = VllmConfig()
        object.__setattr__(layers_config, "model_config", model)
        with set_current_vllm_config(layers_config):
            module = torch.nn.ModuleList([
                Gemma3nDecoderLayer(text, None, None, prefix=f"model.layers.{i}")
                for i in range(text.num_hidden_layers)
            ])
    elif kind == "gemma3n_embedder":  # Gemma3nMultimodalEmbedder; fields: the tower config; extra: text hidden
        from vllm.model_executor.models.gemma3n_mm import Gemma3nMultimodalEmbedder
        tower = SimpleNamespace(**fields, rms_norm_eps=1e-6, vocab_offset=0)
        module = Gemma3nMultimodalEmbedder(tower, SimpleNamespace(hidden_size=extra))
    elif kind == "gemma3n_audio":  # transformers' Gemma3nAudioEncoder, which gemma3n_mm.py builds with AutoModel
        from transformers.models.gemma3n.configuration_gemma3n import Gemma3nAudioConfig
        from transformers.models.gemma3n.modeling_gemma3n import Gemma3nAudioEncoder
        module = Gemma3nAudioEncoder(Gemma3nAudioConfig(**fields))
    else:  # the connector: fields are the vision config, extra (scale_factor, text hidden)
        config = SimpleNamespace(
            vision_config=SimpleNamespace(**fields),
            scale_factor=extra[0],
            text_config=SimpleNamespace(hidden_size=extra[1]),
        )
        module = Idefics3Connector(config)
    return module
with set_current_vllm_config(VllmConfig()):
    parallel_state.init_distributed_environment(1, 0, "tcp://127.0.0.1:" + sys.argv[1], 0, "gloo")
    parallel_state.initialize_model_parallel(1, 1)
    from vllm.model_executor.models.clip import CLIPVisionModel
    from vllm.model_executor.models.glm4_1v import Glm4vVisionTransformer
    from vllm.model_executor.models.idefics2_vision_model import Idefics2VisionTransformer
    from vllm.model_executor.models.minicpmv import Resampler2_5
    from vllm.model_executor.models.idefics3 import Idefics3Connector, Idefics3VisionTransformer
    from vllm.model_executor.models.intern_vit import InternVisionModel
    from vllm.model_executor.models.kimi_k25_vit import KimiK25MultiModalProjector, MoonViT3dPretrainedModel
    from vllm.model_executor.models.kimi_vl import KimiVLMultiModalProjector
    from vllm.model_executor.models.moonvit import MoonVitPretrainedModel
    from vllm.model_executor.models.mllama4 import Llama4MultiModalProjector, Llama4VisionModel
    from vllm.model_executor.models.qwen3_vl import Qwen3_VisionTransformer
    from vllm.model_executor.models.qwen2_5_vl import Qwen2_5_VisionTransformer
    for line in sys.stdin:
        try:
            with torch.device("meta"):
                counts = [weights(build(*case)) for case in json.loads(line)]
            reply = {"counts": counts}
        except Exception:
            reply = {"error": traceback.format_exc()}
        print("{REPLY}" + json.dumps(reply), flush=True)
"""


class VllmMetaBuild:
    """One child Python that imports vLLM once and counts the parameters of the modules each call names.

    Starting vLLM costs about ten seconds a process, so the test session shares one child (the
    ``vllm_meta_build`` fixture) rather than starting one per test. A build that raises is reported to
    the call that asked for it; the child goes on serving the next.
    """

    def __init__(self) -> None:
        # Open as long as the child lives; close() closes it.
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self._child = subprocess.Popen(
            [sys.executable, "-c", _BUILD.replace("{REPLY}", _REPLY), str(pick_free_port())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()

    def parameter_counts(self, cases: list[tuple[str, dict[str, Any], Any]]) -> list[int]:
        """Parameters of each (kind, config fields, extra) vLLM builds.

        ``intern``: InternVisionModel, extra = layers. ``clip``: CLIPVisionModel as llava.py builds it, extra = layers.
        ``glm4v``: Glm4vVisionTransformer. ``idefics3``: Idefics3VisionTransformer. ``idefics3_connector``: extra =
        (scale_factor, text hidden size). ``qwen3_vl``: Qwen3_VisionTransformer, extra = ``qwen3_vl`` or ``qwen3_5``
        (whose vision config class). ``llama4``: Llama4VisionModel with Llama4MultiModalProjector, extra = text hidden
        size. ``qwen2_5_omni``: Qwen2_5_VisionTransformer and transformers' Qwen2_5OmniAudioEncoder, extra = the audio
        config. ``qwen3_omni``: Qwen3Omni_VisionTransformer and Qwen3OmniMoeAudioEncoder, extra = the audio config.
        ``qwen2_audio``: transformers' Qwen2AudioEncoder and Qwen2AudioMultiModalProjector, extra = text hidden size.
        ``paligemma``: SiglipVisionModel and PaliGemmaMultiModalProjector, extra = projection_dim.
        ``phi3v``: Phi3HDImageEmbedding, fields = img_processor, extra = text hidden size.
        ``minicpmv``: Idefics2VisionTransformer with Resampler2_5, extra = (query_num, text hidden size,
        drop_vision_last_layer). ``kimi_vl``: MoonVitPretrainedModel with KimiVLMultiModalProjector, extra = text
        hidden size. ``moonvit_3d``: MoonViT3dPretrainedModel with KimiK25MultiModalProjector, extra = (``kimi_k25``
        or ``kimi_k3``: whose vision config class, text hidden size). ``gemma3n_layers``: every Gemma3nDecoderLayer
        of a Gemma3nTextConfig of fields. ``gemma3n_embedder``: Gemma3nMultimodalEmbedder, fields = hidden_size and
        vocab_size, extra = text hidden size. ``gemma3n_audio``: transformers' Gemma3nAudioEncoder.
        ``radio``: RadioModel, fields = vision_config's args, extra = its patch_size and video_temporal_patch_size.
        ``parakeet``: ProjectedParakeet, fields = the sound config, extra = text hidden size.
        ``interns1``: InternS1VisionModel, fields = the vision config.
        ``ovis2_5``: VisualTokenizer and VisualEmbedding, fields = vit_config, extra = (visual_vocab_size, text
        hidden size).
        ``phi4mm``: Phi4MMImageEncoder and AudioEmbedding, fields = hidden_size, vocab_size, img_processor,
        audio_processor and embd_layer.
        ``ernie_vl``: Ernie4_5_VisionTransformer and VariableResolutionResamplerModel, fields = the vision config,
        extra = the top-level fields (pixel_hidden_size, hidden_size, spatial/temporal_conv_size, use_temporal_conv).
        """
        assert self._child.stdin is not None and self._child.stdout is not None
        self._child.stdin.write(json.dumps(cases) + "\n")
        self._child.stdin.flush()
        deadline = time.monotonic() + _REPLY_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:  # the child's stdout closed: it exited
                break
            if line.startswith(_REPLY):  # vLLM logs to stdout as well
                reply = json.loads(line[len(_REPLY) :])
                assert "error" not in reply, reply.get("error")
                counts: list[int] = reply["counts"]
                return counts
        raise AssertionError(
            f"vLLM's meta build gave no counts (exit {self._child.poll()}): {self._stderr_tail()}"
        )

    def close(self) -> None:
        """End the child: its stdin closes, and it is killed if it does not exit at once."""
        if self._child.stdin is not None:
            self._child.stdin.close()
        try:
            self._child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait()
        self._stderr.close()

    def _read_stdout(self) -> None:
        assert self._child.stdout is not None
        for line in self._child.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-2000:]
