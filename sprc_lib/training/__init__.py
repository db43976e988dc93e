"""Training: the recipes, the one declaration of a run's settings, the run folder, the sampler, the loop,
and the tiny BLIP-2 pretraining of the toy track. `train` and `resume_training` live in `.trainer`."""
