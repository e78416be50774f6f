"""Image-text (CLIP) MCL: the stage task, the locked-feature cache, the integrated two-tower model and the aligned stage 0."""
