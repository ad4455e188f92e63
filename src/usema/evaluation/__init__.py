"""usema.evaluation"""
