"""fastgw.policies.cache"""
