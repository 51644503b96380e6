"""What users run on top of the engine: the pipeline of a run, sampling, judging, the die and the
budget search."""
