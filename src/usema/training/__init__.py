"""usema.training"""
