"""usema.utils: small helpers shared by the stages (device and precision choice, atomic writes)."""
