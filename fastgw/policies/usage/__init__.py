"""fastgw.policies.usage"""
