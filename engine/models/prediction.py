"""Whether a base model predicts the noise (epsilon) or v (SD 2.x 768-v and v-prediction models).

A model trains with the objective it was made with; trained against the other one, a LoRA learns
nonsense without a word. What tells it, in order:

* a diffusers folder: `scheduler/scheduler_config.json` says `prediction_type` (the folder is
  authoritative, so a config that says otherwise is refused by the rulebook);
* a single file holding a `v_pred` key: the marker SDXL v-prediction checkpoints carry, which
  ComfyUI (`comfy/model_detection.py`) and Forge read;
* a single SD2 file: the weights' own answer, found as AUTOMATIC1111 finds it
  (`modules/sd_models_config.py`, `is_using_v_parameterization_for_sd2`): at the last timestep,
  with every latent and conditioning value 0.5, an epsilon model predicts about its input (the
  noise is all there is), while a v model predicts far below it; mean(prediction - input) < -1
  means v. This needs the U-Net's weights, so it runs when the model loads;
* otherwise (SD1, SDXL without the marker): epsilon.

`model.v_parameterization` set to true or false is the user's word and is followed (a folder that
contradicts it is a preflight problem); left null, the model decides, and the run says how.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engine.config.schema import ModelFamily

V_PRED_MARKER = "v_pred"


@dataclass(frozen=True)
class Prediction:
    v: bool | None  # None: not known without the weights (a single SD2 file)
    evidence: str  # why, for the user


def prediction_of_folder(folder: Path) -> Prediction:
    path = Path(folder) / "scheduler" / "scheduler_config.json"
    try:
        kind = json.loads(path.read_text(encoding="utf-8")).get("prediction_type", "epsilon")
    except (OSError, ValueError, AttributeError):
        return Prediction(False, f"{path} is missing or unreadable, so epsilon (diffusers' default)")
    return Prediction(kind == "v_prediction", f"{path} says prediction_type={kind}")


def prediction_of_keys(keys, family: ModelFamily) -> Prediction:
    """What a single file's tensor names say (its header alone)."""
    if V_PRED_MARKER in set(keys):
        return Prediction(True, f"the file holds a '{V_PRED_MARKER}' key (the v-prediction marker)")
    if family == ModelFamily.SD2:
        return Prediction(None, "an SD2 file's weights are tested when the model loads, as AUTOMATIC1111 does")
    return Prediction(False, f"an {family.value.upper()} file without a '{V_PRED_MARKER}' key predicts epsilon")


def looks_like_v_prediction(unet) -> bool:
    """AUTOMATIC1111's test on a loaded U-Net (see the module docstring)."""
    import torch

    param = next(unet.parameters())
    width = unet.config.cross_attention_dim
    latents = torch.full((1, unet.config.in_channels, 8, 8), 0.5, dtype=param.dtype, device=param.device)
    cond = torch.full((1, 2, width if isinstance(width, int) else width[0]), 0.5, dtype=param.dtype, device=param.device)
    with torch.no_grad():
        out = unet(latents, torch.tensor([999], device=param.device), cond).sample
    return (out.float() - latents.float()).mean().item() < -1


def decide(said: bool | None, found: Prediction, unet=None) -> Prediction:
    """The objective the run trains with: the config's word when it gives one, else the model's
    (for a single SD2 file, the loaded U-Net's answer to the test)."""
    if said is not None:
        return Prediction(said, "model.v_parameterization says so")
    if found.v is not None or unet is None:
        return Prediction(bool(found.v), found.evidence)
    v = looks_like_v_prediction(unet)
    return Prediction(v, "AUTOMATIC1111's test on the U-Net's weights (mean(prediction - input) at t=999 "
                      + ("is below -1)" if v else "is not below -1)"))
