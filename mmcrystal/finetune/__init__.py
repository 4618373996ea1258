"""Fine-tuning pretrained encoders on downstream property tasks (issue #8).

- `config`: `BackboneConfig` (alignment export / checkpoint, CHGNet, scratch; extra inputs), `TargetConfig`
  (regression / binary / multiclass), `HeadConfig`, `TuningConfig` (frozen, partial, full, LoRA, layer-wise
  learning-rate decay) and the resolved `PropertyModelConfig` that checkpoints and export folders store.
- `backbone`: reads the pretrained source into encoder configs + weights; `build_property_model`.
- `model`: `PropertyModel` (encoders, optional cross-attention fusion of captions/XRD, MLP head, target statistics).
- `heads`: the head, target normalisation and the masked multi-task loss.
- `tuning`: freezing, LoRA (peft, the ``lora`` extra), parameter groups with layer-wise decay, the optimiser.
- `loop`: in-process training and (MC-dropout) prediction, no Trainer.
- `predictor`: `PropertyPredictor` (``predict(structures) -> (mean, std)``, ``fine_tune``), the interface the
  evaluation and the design loop use.
- `predict` / `crossval`: the ``mmcrystal predict`` and ``mmcrystal crossval`` commands; `metrics`: MAE, ROC-AUC.

The Lightning task is `mmcrystal.tasks.finetune.PropertyFinetuning` (``mmcrystal finetune fit -c ...``).
Nothing is imported here, so ``import mmcrystal.finetune.predictor`` stays free of Lightning.
"""
