"""usema.bench"""
