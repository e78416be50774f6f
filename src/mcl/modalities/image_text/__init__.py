"""Image-text (CLIP) MCL, one concern per module.

- :mod:`.towers`: the run's two-tower model locked as configured, its word tokenizer on disk;
- :mod:`.cache`: the locked-feature cache (:class:`~.cache.LockedFeatureCache`, one ``serve`` entry);
- :mod:`.task`: :class:`~.task.ImageTextTask`, the :class:`~mcl.tasks.StageTask` every stage trains;
- :mod:`.multistage`: :class:`~.multistage.MultistageTwoTower`, the stages integrated in both towers;
- :mod:`.modality`: :data:`~.modality.IMAGE_TEXT`, this modality's entry in :mod:`mcl.modalities`;
- :mod:`.align`: the aligned stage 0 (settings, corpus, alignment, zero-shot check, cached checkpoint).
"""
