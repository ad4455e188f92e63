"""usema.preprocessing: the images of a dataset as the plan wants them (channels, normalisation, spacing), stored
once per run for training to stream from disk."""
