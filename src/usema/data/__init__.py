"""usema.data"""
