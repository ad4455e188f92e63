"""usema.inference"""
