"""fastgw.policies"""
