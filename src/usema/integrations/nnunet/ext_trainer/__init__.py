"""The folder for nnU-Net's trainer search: nnU-Net imports every module in it by name (see nnUNetTrainerUSEMA.py)."""
