"""fastgw.commands"""
