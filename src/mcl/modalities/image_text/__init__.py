"""Image-text (CLIP) MCL: the stage task, the locked-feature cache, the two-tower integration, the aligned stage 0."""
